"""The benchmark scripts must keep running: their tiny configurations, end to end."""

import subprocess
import sys


def run_quick(script: str, timeout: int = 300) -> str:
    """stdout of ``python benchmarks/<script> --quick``; a failing run fails the test."""
    return subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--quick"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    ).stdout


def test_benchmark_quick_runs():
    out = run_quick("run.py")
    assert "Overhead per step" in out and "EM/tuned" in out
    assert "Peak resident memory" in out and "conv eps-network" in out


def test_nfe_benchmark_quick():
    # n = 2000, budgets 10/20/50: the multistep solvers must reach 1.5x the floor within 50 NFE
    # on both mixtures (at n = 20000 they do by 15-30, see docs/benchmarks.md); a looser check
    # than the full benchmark, but one that fails if a solver breaks.
    out = run_quick("nfe.py", timeout=600)
    lines = [line.strip() for line in out.splitlines()]
    for label in ("dpm_solver++ 2M", "dpm_solver++ 3M", "dpm_solver 3 (multistep)"):
        line = next(v for v in lines if v.startswith(label))
        assert ">" not in line, line
    assert "optimised 10-point grid" in out


def test_adaptive_benchmark_quick():
    # each tolerance row: rtol atol ceiling NFE/sample rejected% SW1/floor (range) ...
    # measured at n = 2000: SW1/floor 0.75-1.45, 90-151 NFE per sample, 24-36 % rejected; a
    # biased or broken adaptive solver lands at 2.2x or more (before the Brownian memory: 2.8x)
    out = run_quick("adaptive.py")
    rows = [
        line.split()
        for line in out.splitlines()
        if line.strip() and line.split()[0].replace(".", "", 1).isdigit() and "%" in line
    ]
    assert len(rows) == 4  # two tolerances on each of the two mixtures
    for row in rows:
        nfe, rejected, ratio = float(row[3]), float(row[4].rstrip("%")), float(row[5])
        assert 20 < nfe < 1000 and 0 < rejected < 60, row
        assert ratio < 2.0, row
