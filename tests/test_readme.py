"""The README's Python blocks run as written (the quickstart a new user copies first)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 2 and 'load_model("digits")' in BLOCKS[0] and "nfe=10" in BLOCKS[0]


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, capsys):
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {})
    if index == 0:
        assert capsys.readouterr().out.strip() == "10 torch.Size([16, 1, 8, 8])"


PATHS_DOC = Path(__file__).parents[1] / "docs" / "paths.md"


def test_the_paths_page_runs_in_order(capsys):
    # its blocks build on each other (the second uses the first's paths)
    namespace: dict = {}
    blocks = re.findall(r"```python\n(.*?)```", PATHS_DOC.read_text(), flags=re.S)
    assert len(blocks) == 2
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/paths.md python block {i}", "exec"), namespace)
    assert capsys.readouterr().out.splitlines()[-1] == "20 True"
