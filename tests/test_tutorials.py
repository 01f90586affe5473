"""The tutorials run as written: each page's Python blocks execute in order, in one namespace,
and print what the page says; and the documentation site builds with ``mkdocs build --strict``.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]
TUTORIALS = ROOT / "docs" / "tutorials"
PAGES = [
    "pick-a-solver",
    "discrete-vs-continuous",
    "schedules-and-grids",
    "bring-your-model",
    "likelihoods",
    "generation-at-scale",
]


OUTPUT = '```text title="output"\n'
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?")


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (TUTORIALS / f"{page}.md").read_text(), flags=re.S)


def blocks_and_outputs(page: str) -> list[tuple[str, str | None]]:
    """Each Python block with the output block shown right after it (None if there is none)."""
    text = (TUTORIALS / f"{page}.md").read_text()
    found = re.findall(
        r"```python\n(.*?)```\n(\n```text title=\"output\"\n(.*?)```\n)?", text, re.S
    )
    return [(code, shown if block else None) for code, block, shown in found]


def same_output(printed: str, shown: str) -> bool:
    """The text matches word for word; each number within 5 % (or 0.01): the pages show one
    machine's run, and the last digits of sampled statistics may differ on another CPU."""
    words = [NUMBER.split(" ".join(x.split())) for x in (printed, shown)]
    numbers = [[float(v) for v in NUMBER.findall(" ".join(x.split()))] for x in (printed, shown)]
    return (
        words[0] == words[1]
        and len(numbers[0]) == len(numbers[1])
        and all(abs(a - b) <= max(0.05 * abs(b), 0.01) for a, b in zip(*numbers, strict=True))
    )


def run_page(page: str, capsys, monkeypatch, tmp_path) -> tuple[dict, str]:
    """Execute the page's blocks in order in one namespace (in a scratch directory, since
    some write files), checking each block's output against the output shown under it;
    return the namespace and everything the blocks printed."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"tutorial_{page.replace('-', '_')}"}
    everything = []
    for i, (block, shown) in enumerate(blocks_and_outputs(page)):
        capsys.readouterr()
        exec(compile(block, f"docs/tutorials/{page}.md python block {i}", "exec"), namespace)
        printed = capsys.readouterr().out
        if shown is None:
            assert not printed, f"block {i} prints but the page shows no output:\n{printed}"
        else:
            assert same_output(printed, shown), (
                f"block {i} printed\n{printed}\nthe page shows\n{shown}"
            )
        everything.append(printed)
    return namespace, "".join(everything)


def test_every_tutorial_is_in_the_nav_and_has_python_blocks():
    nav = (ROOT / "mkdocs.yml").read_text()
    assert sorted(p.stem for p in TUTORIALS.glob("*.md")) == sorted(PAGES)
    for page in PAGES:
        assert f"tutorials/{page}.md" in nav
        assert len(python_blocks(page)) >= 2, page


def test_the_home_page_example_prints_what_it_says(capsys):
    text = (ROOT / "docs" / "index.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    exec(compile(block, "docs/index.md python block", "exec"), {})
    assert capsys.readouterr().out.strip() == "10 torch.Size([16, 1, 8, 8])"


def test_pick_a_solver(capsys, monkeypatch, tmp_path):
    ns, out = run_page("pick-a-solver", capsys, monkeypatch, tmp_path)
    count = len(ns["names"])
    assert count >= 23 and out.startswith(f"{count} solvers\nadaptive_sde, annealed_langevin,")
    assert "dpm_solver++(order=3) | unipc(order=3, bh1, x0)\n10 5\n" in out
    assert "exact samples" in out and "ode_heun:uniform          9" in out
    # the page's claim: from 10 to 20 NFE the log-SNR exponential integrators' coupled error
    # falls faster than ode_heun's (about ten-fold against five-fold)
    coupled = {(r.solver, r.budget): r.metrics["coupled"] for r in ns["records"]}
    heun = coupled["ode_heun", 10] / coupled["ode_heun", 20]
    for solver in ["dpm_solver++:order=3:grid=logsnr", "unipc:grid=logsnr"]:
        fall = coupled[solver, 10] / coupled[solver, 20]
        assert fall > 1.4 * heun and fall > 6, (solver, fall, heun)
    assert 3 < heun < 8
    assert ns["out"].nfe == 10 and ns["out"].samples.shape == (16, 1, 8, 8)


def test_discrete_against_continuous(capsys, monkeypatch, tmp_path):
    ns, out = run_page("discrete-vs-continuous", capsys, monkeypatch, tmp_path)
    lines = out.splitlines()
    assert lines[0] == "1000 (1, 8, 8) VPSDE" and lines[1] == lines[2]  # alpha_bar = the table
    assert lines[3] == "[1.0, 500.0, 1000.0] [0, 499, 999]"
    # the hand-written DDPM loop and ddpm_ancestral agree to float32 round-off
    nfe, diff = lines[4].split()
    assert nfe == "50" and float(diff) < 1e-4
    # the page's claims: at 10 NFE Euler-Maruyama and Heun still draw noise (Fréchet in the
    # hundreds), DDPM and DPM-Solver++ are in the data's range; at 50 NFE every sampler is
    fd = {key: m["fd"] for key, m in ns["results"].items()}
    assert fd["euler_maruyama", 10] > 100 and fd["ode_heun", 10] > 100
    assert fd["ddpm_ancestral", 10] < 100 and fd["dpm_solver++", 10] < 100
    assert all(fd[s, 50] < 100 for s, _ in fd), fd
    assert ns["real"]["fd"] < 100


def test_schedules_and_grids(capsys, monkeypatch, tmp_path):
    ns, out = run_page("schedules-and-grids", capsys, monkeypatch, tmp_path)
    zero = torch.tensor(0.0, dtype=torch.float64)
    crossings = {name: float(s.t_from_log_snr(zero)) for name, s in ns["schedules"].items()}
    assert out.splitlines()[1].split()[-1] == f"{crossings['linear']:.3f}"
    # the page's claims: linear crosses SNR = 1 at t = 0.26, cosine about halfway
    assert round(crossings["linear"], 2) == 0.26 and 0.45 < crossings["cosine"] < 0.55
    assert "karras     1.000" in out
    errors = ns["errors"]
    for schedule in ["linear", "cosine"]:
        row = [errors[schedule, rule] for rule in ["uniform", "quadratic", "logsnr"]]
        assert max(row) / min(row) >= 2, row  # "a factor of two or more"
    found = ns["found"]
    # the page's claim: the tuned grid is closer than the best named grid on held-out starts
    assert found.held_out_error < min(err for err, _ in found.named.values())
    assert len(found.grid) == 6
    assert out.splitlines()[-1] == "6 6"


def test_bring_your_model(capsys, monkeypatch, tmp_path):
    pytest.importorskip("diffusers")
    _, out = run_page("bring-your-model", capsys, monkeypatch, tmp_path)
    lines = out.splitlines()
    assert lines[0] == "(3, 8, 8) 1000 eps"
    nfe, rel = lines[1].split()
    assert nfe == "10" and float(rel) < 1e-5  # the same samples as diffusers' DDIM loop
    assert lines[2] == "10 (4, 3, 8, 8)"
    assert lines[3] == "[1.0, 3.0, 1.0] False"  # w(t), and the interval changes the samples
    assert lines[4] == "VESDE (2,)" and lines[5] == "19 True"


def test_likelihoods(capsys, monkeypatch, tmp_path):
    ns, out = run_page("likelihoods", capsys, monkeypatch, tmp_path)
    res, exact = ns["res"], ns["exact"]
    assert abs(float(res.log_prob.mean() - exact.mean())) < 0.01
    assert float((res.log_prob - exact).abs().max()) < 0.05
    assert float((ns["back"] - ns["x"][:8]).abs().max()) < 1e-3
    # the page's claim: the ELBO's bits/dim are larger than the ODE's
    assert float(ns["vlb_bpd"].mean()) > float(ns["ode_bpd"].mean()) + 0.5
    assert "ELBO" in out and "(1000 network calls)" in out


def test_generation_at_scale(capsys, monkeypatch, tmp_path):
    _, out = run_page("generation-at-scale", capsys, monkeypatch, tmp_path)
    lines = out.splitlines()
    assert lines[0] == "96 96 3 10"
    assert lines[2] == "(96, 1, 8, 8) 1 10 3"
    assert lines[3] == "0 32 True"  # resume: nothing new, then only the lost shard
    assert lines[4].startswith("refused: --out samples holds a different run")
    # batch size and count change a sample by float round-off at most (batch-dependent
    # convolution kernels on some CPUs; measured up to 2e-5 here)
    assert all(float(v) < 1e-4 for v in lines[5].split())


def _torchrun_command() -> str:
    text = (TUTORIALS / "generation-at-scale.md").read_text()
    (block,) = [b for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S) if "torchrun" in b]
    return block.replace("\\\n", " ").strip()


@pytest.mark.slow
@pytest.mark.xdist_group("torchrun")  # one torchrun at a time: they share the default port
def test_the_torchrun_command_writes_the_one_process_samples(capsys, monkeypatch, tmp_path):
    """The page's torchrun command as written, with two gloo processes on CPU (about 11 s on
    2 cores), against the samples of the page's one-process run."""
    import numpy as np

    from scoresde.commands.generate import read_samples

    ns, _ = run_page("generation-at-scale", capsys, monkeypatch, tmp_path)
    cmd = _torchrun_command()
    assert cmd.startswith("torchrun --nproc-per-node 2 ") and cmd.endswith("--out samples/")
    args = [*cmd.split()[1:-1], str(tmp_path / "torchrun"), "--no-progress"]
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    two = read_samples(tmp_path / "torchrun")
    assert np.array_equal(two, ns["samples"])
    manifest = (tmp_path / "torchrun" / "manifest.json").read_text()
    assert '"world_size": 2' in manifest


MKDOCS_PLUGINS = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


def test_the_site_builds_strictly(tmp_path):
    """``mkdocs build --strict``: no broken links, no page outside the nav, every API
    reference entry resolved (about 6 s on 2 cores)."""
    for module in MKDOCS_PLUGINS:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[docs]')")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for page in PAGES:
        assert (tmp_path / "tutorials" / page / "index.html").exists()
    reference = (tmp_path / "reference" / "sampling" / "index.html").read_text()
    assert "Draw samples by integrating the reverse SDE" in reference  # sample's docstring
