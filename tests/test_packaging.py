"""What a user's packaging tools see: the licence, type information, the version."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).parents[1]


def test_license_file_matches_pyproject():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "MIT" and meta["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert (ROOT / "CHANGELOG.md").read_text().startswith("# Changelog")


@pytest.mark.slow
def test_the_wheel_carries_license_py_typed_and_the_weights(tmp_path):
    # build from a copy of the tracked files: an in-tree build leaves build/lib behind, whose
    # stale modules a later build would pack too
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()  # fmt: skip
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(src)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("scoresde-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "scoresde/py.typed" in names
    assert any(n.endswith("licenses/LICENSE") for n in names), names
    for name in (
        "model/model.json",
        "model/model.safetensors",
        "weights/classifier.json",
        "weights/classifier.safetensors",
        "study/edm/model.safetensors",
    ):
        assert f"scoresde/digits/{name}" in names, name
    assert "scoresde/core/sde.py" in names and "scoresde/sde.py" not in names
