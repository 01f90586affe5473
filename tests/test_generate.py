"""`scoresde generate`: per-index noise, shards, resume, refusal, multi-process."""

import errno
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

import scoresde as sd
from scoresde.commands.cli import main
from scoresde.commands.generate import RunMismatchError, generate, model_fingerprint, read_samples
from scoresde.core.indexed_noise import IndexedNoise
from scoresde.core.output_dir import writer_lock
from scoresde.models import ModelSpec, load_model
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


@pytest.mark.xdist_group("torchrun")  # one torchrun at a time: they share the default port
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


def test_a_directory_another_run_is_writing_is_refused(tmp_path, capsys):
    """While one run holds the directory's writer lock (here this test, as another run
    would), a second is refused in one line and writes nothing; freed, the run goes ahead."""
    with writer_lock(tmp_path):
        assert _run(tmp_path, "--num", "12") == 2
        err = capsys.readouterr().err.strip()
        assert "another process is writing" in err and len(err.splitlines()) == 1, err
        assert not list(tmp_path.glob("*.json")) and not list(tmp_path.glob("*.npz"))
    assert _run(tmp_path, "--num", "12") == 0


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


class TinyEps(torch.nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(weight * torch.eye(3))

    def forward(self, x, t):
        return self.lin(x) * t[:, None]


def _module_spec(weight):
    """An nn.Module eps-network whose output depends on its weights."""
    net, sde = TinyEps(weight), sd.VPSDE()
    return ModelSpec(sd.score_from_eps(net, sde), sde, (3,)), net


def test_generate_equals_sample_with_the_same_per_index_noise(tmp_path):
    """Bit for bit: the shards hold what `sample` returns for the same starts and noise."""
    spec = load_model(TOY)
    for solver in ("euler_maruyama", "dpm_solver++"):
        out = tmp_path / solver
        generate(spec, out, num=23, solver=solver, steps=6, batch_size=8, shard_size=10,
                 seed=4, progress=False)  # fmt: skip
        like = torch.empty(23, *spec.shape)
        noise = IndexedNoise(like, torch.arange(23), 4)
        ref = sd.sample(spec.score, spec.sde, x_T=noise.prior(spec.sde.prior_std),
                        solver=solver, steps=6, time_grid="logsnr", noise=noise,
                        generator=torch.Generator())  # fmt: skip
        assert np.array_equal(read_samples(out), ref.samples.numpy())
        x_T = IndexedNoise(like, torch.arange(23), 4).prior(spec.sde.prior_std)
        assert not np.allclose(read_samples(out), x_T.numpy())  # not the prior written back


@pytest.mark.slow
def test_generate_matches_the_target_distribution(tmp_path, noise_floor):
    """The 2-D mixture's exact eps as the model: 2000 samples at 100 steps of DPM-Solver++
    within 2x the median exact-vs-exact sliced-W1 floor (measured 1.0x)."""
    from scoresde import metrics

    g, ref, floor = noise_floor("gmm2d", 2000, 5, "median")
    sde = sd.VPSDE()
    spec = ModelSpec(sd.score_from_eps(g.exact_score(sde).eps, sde), sde, (2,))
    generate(spec, tmp_path, num=2000, steps=100, batch_size=500, progress=False)
    x = torch.from_numpy(read_samples(tmp_path))
    assert metrics.sliced_wasserstein(x, ref) < 2.0 * floor


def test_resume_with_changed_weights_is_refused(tmp_path):
    spec, _ = _module_spec(0.5)
    generate(spec, tmp_path, num=12, shard_size=5, progress=False)
    same, _ = _module_spec(0.5)
    generate(same, tmp_path, num=12, shard_size=5, progress=False)  # same model: resumes
    changed, net = _module_spec(0.5)
    with torch.no_grad():
        net.lin.weight[0, 0] += 1e-3
    with pytest.raises(RunMismatchError, match="model_fingerprint"):
        generate(changed, tmp_path, num=12, shard_size=5, progress=False)


def test_fingerprint_sees_parameters_the_probe_misses():
    spec, net = _module_spec(0.5)
    net.register_buffer("unused", torch.zeros(2))  # never touches the output
    before = model_fingerprint(spec)
    net.unused += 1.0
    assert model_fingerprint(spec) != before


def test_fingerprint_sees_a_constant_rescaling_of_a_plain_function():
    from scoresde.evaluation.targets import mixture_2d

    g, sde = mixture_2d(), sd.VPSDE()

    def spec(factor):
        return ModelSpec(sd.score_from_eps(lambda x, t: factor * g.eps(x, t, sde), sde), sde, (2,))

    assert model_fingerprint(spec(1.0)) == model_fingerprint(spec(1.0))
    assert model_fingerprint(spec(1.0)) != model_fingerprint(spec(1.5))
    assert model_fingerprint(spec(1.0)) != model_fingerprint(spec(1.001))


def test_output_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        _run(tmp_path / "gen", "--num", "12")
        cmp = ["compare", "--target", "gmm2d", "--nfe", "10", "--solvers", "ode_euler"]
        cmp += ["--samples", "50", "--replicates", "2", "--no-progress"]
        main([*cmp, "--out", str(tmp_path / "cmp")])
        os.umask(0o027)
        _run(tmp_path / "gen027", "--num", "12")
    finally:
        os.umask(old)
    written = [p for p in (tmp_path / "gen").iterdir() if p.is_file()]
    written += [p for p in (tmp_path / "cmp").iterdir() if p.is_file()]
    names = {p.name for p in written}
    assert {"manifest.json", "run.json", "results.json", "results.csv"} <= names
    assert any(n.startswith("shard_") for n in names)
    for p in written:
        assert p.stat().st_mode & 0o777 == 0o644, p.name
    for p in (tmp_path / "gen027").iterdir():
        assert p.stat().st_mode & 0o777 == 0o640, p.name


def test_shard_not_matching_the_manifest_checksum_is_regenerated(tmp_path):
    spec = load_model(TOY)
    kw = {"num": 20, "shard_size": 10, "steps": 4, "progress": False}
    generate(spec, tmp_path, **kw)
    good = read_samples(tmp_path)
    with np.load(tmp_path / "shard_00001.npz") as z:  # loadable, right shape, wrong values
        np.savez(tmp_path / "shard_00001.npz", samples=z["samples"] + 1.0, indices=z["indices"])
    result = generate(spec, tmp_path, **kw)
    assert result.new_samples == 10
    assert np.array_equal(read_samples(tmp_path), good)


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EACCES])
def test_a_failed_write_keeps_earlier_shards_and_says_what_happened(tmp_path, monkeypatch, capsys,
                                                                    error):  # fmt: skip
    import scoresde.commands.generate as gen_module

    real, calls = gen_module.atomic_write, []

    def failing(path, data):
        calls.append(path.name)
        if path.name == "shard_00002.npz":
            raise OSError(error, os.strerror(error), str(path))
        real(path, data)

    monkeypatch.setattr(gen_module, "atomic_write", failing)
    assert _run(tmp_path, "--num", "40") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "shard_00002.npz" in err
    assert os.strerror(error) in err and "2 shard(s) finished before it are intact" in err
    assert not list(tmp_path.glob(".shard_*"))
    monkeypatch.setattr(gen_module, "atomic_write", real)
    assert _run(tmp_path, "--num", "40") == 0  # the same command resumes
    assert _run(tmp_path / "ref", "--num", "40") == 0
    assert np.array_equal(read_samples(tmp_path), read_samples(tmp_path / "ref"))
