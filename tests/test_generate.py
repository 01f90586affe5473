"""`scoresde generate`: per-index noise, shards, resume, refusal, multi-process."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from scoresde.cli import main
from scoresde.generate import generate, read_samples
from scoresde.indexed_noise import IndexedNoise
from scoresde.model import load_model
from scoresde.solvers import PredictorCorrector

HERE = Path(__file__).parent
TOY = f"{HERE / 'toy_model.py'}:build"
BASE = ["--model", TOY, "--steps", "4", "--shard-size", "10", "--no-progress"]


def _run(out, *extra):
    return main(["generate", *BASE, "--out", str(out), *extra])


def test_indexed_noise_is_standard_normal_and_keyed_by_index():
    like = torch.empty(4000, 5)
    noise = IndexedNoise(like, torch.arange(4000), seed=7)
    draws = torch.stack([noise.prior(), noise.normal(), noise.normal()])  # (3, 4000, 5)
    flat = draws.double().flatten().numpy()
    # 60000 draws: KS p-value, mean and variance within 4 standard errors of N(0, 1)
    assert scipy.stats.kstest(flat, "norm").pvalue > 1e-3
    assert abs(flat.mean()) < 4 / np.sqrt(flat.size)
    assert abs(flat.var() - 1) < 4 * np.sqrt(2 / flat.size)
    # no correlation between draws, samples or elements
    c = np.corrcoef(draws.reshape(3, -1).double().numpy())
    assert np.abs(c - np.eye(3)).max() < 0.03
    # sample 123's draws do not depend on its batch or position
    sub = IndexedNoise(like[:3], torch.tensor([999, 123, 5]), seed=7)
    got = torch.stack([sub.prior(), sub.normal(), sub.normal()])
    torch.testing.assert_close(got[:, 1], draws[:, 123], rtol=0, atol=0)
    other_seed = IndexedNoise(like[:3], torch.tensor([999, 123, 5]), seed=8).prior()
    assert not torch.equal(other_seed, got[0])


@pytest.mark.parametrize(
    "solver",
    [
        "euler_maruyama",
        "dpm_solver++",
        "ddpm_ancestral",
        "adaptive_sde",
        "edm_heun",
        PredictorCorrector(norms="sample"),
    ],
)
def test_batch_size_does_not_change_samples(tmp_path, solver):
    spec = load_model(TOY)
    kw = {"num": 30, "solver": solver, "steps": 5, "shard_size": 9, "progress": False}
    generate(spec, tmp_path / "a", batch_size=7, **kw)
    generate(spec, tmp_path / "b", batch_size=64, **kw)
    a, b = read_samples(tmp_path / "a"), read_samples(tmp_path / "b")
    assert a.shape == (30, 2, 3) and np.array_equal(a, b)


def _torchrun(nproc, out, *extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "-m", "scoresde", "generate", *BASE, "--out", str(out), *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_one_vs_two_gloo_processes(tmp_path):
    args = ("--num-samples", "45", "--batch-size", "4", "--solver", "euler_maruyama")
    single = _torchrun(1, tmp_path / "one", *args)
    double = _torchrun(2, tmp_path / "two", *args)
    assert single.returncode == 0, single.stderr[-2000:]
    assert double.returncode == 0, double.stderr[-2000:]
    a, b = read_samples(tmp_path / "one"), read_samples(tmp_path / "two")
    assert a.shape == (45, 2, 3) and np.array_equal(a, b)
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["world_size"] == 2


def test_resume_after_kill_matches_uninterrupted(tmp_path):
    args = ["--num", "60", "--batch-size", "5", "--solver", "euler_maruyama"]
    assert _run(tmp_path / "ref", *args) == 0
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "scoresde", "generate", *BASE, "--out", str(out), *args]
    env = {**os.environ, "SCORESDE_TOY_DELAY": "0.05"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "shard_00001.npz").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in out.glob("shard_*.npz"))
    assert 2 <= len(done) < 6 and not (out / "manifest.json").exists()
    assert main(["generate", *BASE, "--out", str(out), *args]) == 0
    assert np.array_equal(read_samples(out), read_samples(tmp_path / "ref"))


def test_refuses_a_different_run(tmp_path, capsys):
    assert _run(tmp_path, "--num", "12") == 0
    capsys.readouterr()
    assert _run(tmp_path, "--num", "12", "--seed", "1") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scoresde: error:") and "differs in: seed" in err
    assert len(err.splitlines()) == 1
    # the same arguments resume (nothing left to do) and a new batch size is fine
    assert _run(tmp_path, "--num", "12", "--batch-size", "5") == 0


def test_corrupted_and_partial_shards_are_regenerated(tmp_path):
    assert _run(tmp_path / "ref", "--num", "25") == 0
    out = tmp_path / "bad"
    shutil.copytree(tmp_path / "ref", out)
    s0 = out / "shard_00000.npz"
    s0.write_bytes(s0.read_bytes()[:100])  # truncated
    with np.load(out / "shard_00001.npz") as z:  # right file, wrong content
        np.savez(out / "shard_00001.npz", samples=z["samples"][:3], indices=z["indices"][:3])
    (out / ".shard_00002.npz.abc.tmp").write_bytes(b"partial")
    with pytest.raises(ValueError, match="checksum"):
        read_samples(out)
    assert _run(out, "--num", "25") == 0
    assert np.array_equal(read_samples(out), read_samples(tmp_path / "ref"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nowhere/missing.py:build"], "no such file"),
        (["--model", f"{HERE / 'bad_model.py'}:build"], "shape"),
        (["--num", "0"], "--num must be >= 1"),
        (["--solver", "torchsde"], "per sample"),
        (["--solver", "pc"], "couples the samples of a batch"),
    ],
)
def test_bad_input_one_line_error(tmp_path, capsys, args, message):
    base = ["generate", "--model", TOY, "--num", "4", "--out", str(tmp_path), "--no-progress"]
    assert main([*base, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scoresde: error:") and message in err and len(err.splitlines()) == 1


def test_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert _run(blocker / "sub", "--num", "4") == 2
    assert "--out" in capsys.readouterr().err
