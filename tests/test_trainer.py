"""The trainer: determinism, kill and resume, the model directory through --model, bad input,
and data-parallel training under torchrun (2 gloo processes)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import scoresde as sd
from scoresde.commands.cli import main
from scoresde.core.output_dir import writer_lock
from scoresde.models import load_model
from scoresde.models.builtins import BUILTIN_DATA, BUILTIN_MODELS, builtin, builtin_model_dir

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SMALL = dict(path="vp-linear", steps=30, batch=32, width=32, checkpoint_every=10, progress=False)


def _points(n=400, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[2.0, 0.0], [-2.0, 1.0]])
    return (centres[rng.integers(0, 2, n)] + 0.3 * rng.normal(size=(n, 2))).astype(np.float32)


@pytest.fixture
def npy(tmp_path):
    path = tmp_path / "points.npy"
    np.save(path, _points())
    return path


def _weights(result):
    return {k: v.clone() for k, v in result.network.state_dict().items()}


def test_same_seed_same_weights_other_seed_other_weights():
    data = sd.TrainingData.from_array(_points())
    a, b = (_weights(sd.train(data, None, seed=3, **SMALL)) for _ in range(2))
    c = _weights(sd.train(data, None, seed=4, **SMALL))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_every_recipe_trains_and_loads(tmp_path):
    """Each schedule's recipe lowers the loss, writes a model directory and loads back as the
    same network under the same path and prediction."""
    data = sd.TrainingData.from_array(_points())
    for path in ("ddpm-linear", "ddpm-zsnr", "edm", "rectified-flow", "vp-cosine"):
        out = tmp_path / path
        result = sd.train(data, out, **{**SMALL, "path": path, "steps": 60})
        curve = [p["loss"] for p in result.meta["loss_curve"]]
        assert len(curve) == 1 or curve[-1] < curve[0], (path, curve)
        spec = load_model(str(out))
        meta = json.loads((out / "model.json").read_text())
        assert meta["path"] == path and meta["prediction"] == result.meta["prediction"]
        x = torch.randn(5, 2)
        t = torch.full((5,), 0.5)
        # the loaded score is the trained EMA network's, through the recorded adapter
        fresh = sd.train(data, None, **{**SMALL, "path": path, "steps": 60}).network
        from scoresde.models.directory import score_of

        _, expected = score_of(fresh, meta)
        torch.testing.assert_close(spec.score(x, t), expected(x, t))


def test_model_directory_round_trips_through_model_dir(tmp_path, capsys):
    out = tmp_path / "m"
    sd.train(sd.TrainingData.from_array(_points()), out, **{**SMALL, "steps": 40})
    weights = load_file(out / "model.safetensors")
    assert all(v.dtype == torch.float32 for v in weights.values())
    compare = ["compare", "--model", str(out), "--nfe", "4", "--solvers", "ddim", "--samples",
               "64", "--replicates", "2", "--reference", "ode_heun:20"]  # fmt: skip
    assert main(compare) == 0
    # a zero-terminal-SNR model through compare too (its model check has no x0 at T)
    zero = tmp_path / "rf"
    sd.train(sd.TrainingData.from_array(_points()), zero, **{**SMALL, "path": "rectified-flow"})
    assert main([*compare[:2], str(zero), *compare[3:]]) == 0
    assert "ddim" in capsys.readouterr().out
    gen_dir = tmp_path / "g"
    assert main(["generate", "--model", str(out), "--num", "16", "--solver", "ddim",
                 "--steps", "5", "--out", str(gen_dir)]) == 0  # fmt: skip
    assert (gen_dir / "manifest.json").is_file()
    tuned = sd.tune_grid(str(out), "ddim", 4, samples=8, held_out=8, iterations=2)
    assert tuned.model == str(out) and tuned.grid.numel() == 4
    # a tampered weights file is refused
    (out / "model.safetensors").write_bytes(b"0" + (out / "model.safetensors").read_bytes()[1:])
    with pytest.raises(ValueError, match="SHA-256"):
        load_model(str(out))


def test_the_training_page_runs(capsys):
    page = Path(__file__).parents[1] / "docs" / "training.md"
    (block,) = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    exec(compile(block, "docs/training.md python block", "exec"), {})
    assert capsys.readouterr().out.strip() == "flow (2,)"


def test_likelihood_of_a_trained_digits_model(tmp_path, capsys):
    """``likelihood --model DIR``: the ODE bits/dim for any path (zero terminal SNR included),
    the DDPM bound for a table."""
    data = builtin(BUILTIN_DATA, "digits", "data")
    for path, has_bound in (("vp-linear", False), ("ddpm-linear", True), ("rectified-flow", False)):
        out = tmp_path / path
        sd.train(data, out, path=path, steps=20, width=8, progress=False)
        args = [
            "likelihood",
            "--model",
            str(out),
            "--samples",
            "2",
            "--rtol",
            "1e-3",
            "--atol",
            "1e-3",
        ]
        assert main(args) == 0
        report = capsys.readouterr().out
        assert "probability-flow ODE" in report
        assert ("DDPM variational bound" in report) == has_bound


def test_clip_x0_is_recorded_and_applied(tmp_path):
    data = builtin(BUILTIN_DATA, "digits", "data")
    sd.train(data, tmp_path / "m", path="ddpm-cosine", steps=5, width=8, progress=False,
             clip_x0=True)  # fmt: skip
    assert json.loads((tmp_path / "m" / "model.json").read_text())["x0_clip"] == [-1.0, 1.0]
    spec = load_model(str(tmp_path / "m"))
    x0 = spec.score.x0(3 * torch.randn(8, 1, 8, 8), torch.full((8,), 0.999))
    assert float(x0.abs().max()) <= 1.0
    with pytest.raises(ValueError, match="no range"):
        sd.train(_points(), None, steps=2, clip_x0=True, progress=False)


def test_bad_data_and_settings_get_one_clear_error(tmp_path, capsys):
    bad = {
        "nan.npy": (np.array([[0.0, np.nan], [1.0, 2.0]]), "NaN"),
        "rank.npy": (np.zeros(10), "rank"),
        "empty.npy": (np.zeros((0, 2)), "at least 2 rows"),
    }
    for name, (array, message) in bad.items():
        np.save(tmp_path / name, array)
        code = main(["train", "--data", str(tmp_path / name), "--out", str(tmp_path / "o"),
                     "--steps", "2"])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, err
    np.save(tmp_path / "ok.npy", _points())
    for flags, message in (
        (["--lr", "-1"], "lr must lie"),
        (["--schedule", "warp"], "unknown path"),
        (["--batch", "0"], "batch must be"),
        (["--t-sampler", "importance", "--schedule", "rectified-flow"], "finite log-SNR"),
    ):
        code = main(["train", "--data", str(tmp_path / "ok.npy"), "--out",
                     str(tmp_path / "o2"), "--steps", "2", *flags])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2 and message in err, (flags, err)
    with pytest.raises(ValueError, match="already holds"):
        sd.train(_points(), tmp_path / "m", **SMALL)
        sd.train(_points(), tmp_path / "m", **SMALL)


def _cli(out, npy, *extra, launcher=(sys.executable, "-m", "scoresde")):
    return [*launcher, "train", "--data", str(npy), "--out", str(out), "--schedule",
            "vp-linear", "--width", "64", "--batch", "32", "--no-progress", *extra]  # fmt: skip


def _run(cmd):
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _descendants(pid):
    """``pid`` and every process below it, from /proc's parent links (Linux): torchrun starts
    its workers in sessions of their own, so killing the launcher's process group leaves
    them running."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], []))
    return found


def _kill_after(cmd, out, step):
    """Start ``cmd``, SIGKILL it and all its processes once checkpoint.json reaches ``step``;
    return its exit code once none of them is left."""
    proc = subprocess.Popen(cmd, env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline, job = time.time() + 120, []
    while time.time() < deadline and proc.poll() is None:
        file = out / "checkpoint.json"
        if file.is_file() and json.loads(file.read_text())["step"] >= step:
            job = _descendants(proc.pid)
            for pid in job:
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    while any(_alive(pid) for pid in job):
        time.sleep(0.05)
    return proc.returncode


def _alive(pid):
    try:  # a killed orphan is reaped by init; until then it shows as a zombie
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.slow
def test_kill_and_resume_give_the_uninterrupted_bytes(tmp_path, npy):
    steps = ["--steps", "600", "--checkpoint-every", "50"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    _run(_cli(whole, npy, *steps))
    assert _kill_after(_cli(broken, npy, *steps), broken, 200) == -signal.SIGKILL
    assert not (broken / "model.json").exists()  # killed before the end
    _run(_cli(broken, npy, *steps, "--resume"))
    same = (whole / "model.safetensors").read_bytes() == (broken / "model.safetensors").read_bytes()
    assert same
    a = json.loads((whole / "model.json").read_text())
    b = json.loads((broken / "model.json").read_text())
    assert a["loss_curve"] == b["loss_curve"]


@pytest.mark.slow
def test_a_second_run_on_a_directory_being_trained_is_refused(tmp_path, npy, capsys):
    """A resume started while the first run still writes (as after killing only torchrun's
    launcher) is refused by the first run's writer lock; the lock dies with its holder."""
    steps = ["--steps", "100000", "--checkpoint-every", "20"]
    out = tmp_path / "m"
    proc = subprocess.Popen(_cli(out, npy, *steps), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 120
        while not (out / "checkpoint.json").is_file() and time.time() < deadline:
            time.sleep(0.05)
        before = (out / "checkpoint.json").read_text()
        assert main(_cli(out, npy, *steps, "--resume", launcher=())) == 2
        err = capsys.readouterr().err
        assert "another process is writing" in err and err.count("\n") == 1, err
        assert proc.poll() is None  # the first run goes on
    finally:
        proc.kill()
        proc.wait()
    assert json.loads(before)["step"] >= 20
    with writer_lock(out):  # SIGKILL freed it
        pass


# --standalone: a free port of its own for each launch
TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            "2", "-m", "scoresde")  # fmt: skip


@pytest.mark.slow
@pytest.mark.xdist_group("torchrun")
def test_two_gloo_processes_give_the_one_process_weights(tmp_path, npy):
    one, two = tmp_path / "one", tmp_path / "two"
    steps = ["--steps", "20", "--checkpoint-every", "10"]
    _run(_cli(one, npy, *steps))
    _run(_cli(two, npy, *steps, launcher=TORCHRUN))
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert json.loads((two / "model.json").read_text())["training"]["world_size"] == 2
    for k in a:  # float32 reassociation in the all-reduce only
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-4 * float(a[k].abs().max()))


@pytest.mark.slow
@pytest.mark.xdist_group("torchrun")
def test_kill_and_resume_under_torchrun(tmp_path, npy):
    steps = ["--steps", "600", "--checkpoint-every", "50"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    _run(_cli(whole, npy, *steps, launcher=TORCHRUN))
    assert _kill_after(_cli(broken, npy, *steps, launcher=TORCHRUN), broken, 200) != 0
    assert not (broken / "model.json").exists()
    _run(_cli(broken, npy, *steps, "--resume", launcher=TORCHRUN))
    a, b = load_file(whole / "model.safetensors"), load_file(broken / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", sorted(BUILTIN_MODELS))
def test_the_shipped_models_load_by_name_and_sample(name, capsys):
    """The digits model and the schedule study's trained models ship with the package as
    model directories, load by name (weights checked against their SHA-256), are each under
    1 MB and sample finite digits."""
    folder = builtin_model_dir(name)
    assert sum(f.stat().st_size for f in folder.iterdir()) < 2**20
    spec = load_model(name)
    gen = torch.Generator().manual_seed(0)
    sol = sd.sample(spec.score, spec.sde, (8, *spec.shape), solver="ddim", steps=10, generator=gen)
    assert torch.isfinite(sol.samples).all() and float(sol.samples.abs().max()) < 3


def test_compare_names_a_shipped_study_model(capsys):
    args = ["compare", "--model", "digits-rectified-flow", "--solvers", "ddim", "--nfe", "4",
            "--samples", "8", "--replicates", "2", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert "ddim" in capsys.readouterr().out
