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
