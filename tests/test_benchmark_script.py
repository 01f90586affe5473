"""The benchmark script must keep running: its tiny configuration, end to end."""

import subprocess
import sys


def test_benchmark_quick_runs():
    out = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert "Overhead per step" in out and "EM/tuned" in out
    assert "Peak resident memory" in out and "conv eps-network" in out


def test_nfe_benchmark_quick():
    # n = 2000, budgets 10/20/50: the multistep solvers must reach 1.5x the floor within 50 NFE
    # on both mixtures (at n = 20000 they do by 15-30, see docs/benchmarks.md); a looser check
    # than the full benchmark, but one that fails if a solver breaks.
    out = subprocess.run(
        [sys.executable, "benchmarks/nfe.py", "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    lines = [line.strip() for line in out.splitlines()]
    for label in ("dpm_solver++ 2M", "dpm_solver++ 3M", "dpm_solver 3 (multistep)"):
        line = next(v for v in lines if v.startswith(label))
        assert ">" not in line, line
    assert "optimised 10-point grid" in out


def test_adaptive_benchmark_quick():
    out = subprocess.run(
        [sys.executable, "benchmarks/adaptive.py", "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert out.count("euler_maruyama:") == 2 and out.count("0.0078") == 2
