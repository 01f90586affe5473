"""Adaptive SDE solver (Gotta Go Fast) versus Euler–Maruyama at equal error.

Setting of the fast-solver issue: the standard discrete linear schedule, exact eps of the
built-in mixtures, n samples, sliced-W1 against an exact reference sample, reported as a
multiple of the floor (SW1 between two exact samples). The adaptive solver runs on a ladder of
tolerances; NFE is given both per batch (what the batched loop pays: two score calls per
iteration until the slowest sample finishes) and per sample (two calls per attempted step of
that sample, the cost if finished samples left the batch). Euler–Maruyama runs on a ladder of
uniform grids; for each adaptive row the table names the smallest EM budget in the ladder with
an SW1 at least as low, and the factor (adaptive per-sample NFE) / (that EM NFE).

    python benchmarks/adaptive.py            # n = 100000, about 4 minutes on 2 cores
    python benchmarks/adaptive.py --quick    # n = 2000 (runs in the test suite)
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

import scoresde as sd
from scoresde.metrics import sliced_wasserstein
from scoresde.targets import mixture_2d, mixture_8d

TOLERANCES = [(0.1, 0.02), (0.05, 0.0078), (0.02, 0.003)]  # (rtol, atol); the middle: defaults
EM_STEPS = [25, 50, 100, 200, 400]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1 if args.quick else 2)
    n = 2000 if args.quick else 100_000
    tolerances = TOLERANCES[:2] if args.quick else TOLERANCES
    em_steps = EM_STEPS[:3] if args.quick else EM_STEPS
    sde = sd.VPSDE(sd.DiscreteSchedule.linear())
    print(f"adaptive_sde vs euler_maruyama at equal SW1 — n = {n}, discrete linear schedule, "
          f"{platform.machine()} {platform.system()}, torch {torch.__version__}")  # fmt: skip
    start = time.perf_counter()
    for name, g in {"2-D": mixture_2d(), "8-D": mixture_8d()}.items():
        ref = g.sample(n, torch.Generator().manual_seed(101))
        floor = sliced_wasserstein(g.sample(n, torch.Generator().manual_seed(202)), ref, 64)
        score = sd.Score(lambda x, t, g=g: g.eps(x, t, sde), sde, "eps")

        def error(solver, steps=2, score=score, shape=(n, g.dim), ref=ref, floor=floor):
            # an adaptive solver takes only eps from the grid: two steps (T, eps, 0) suffice
            gen = torch.Generator().manual_seed(1)
            sol = sd.sample(score, sde, shape, solver=solver, steps=steps, generator=gen)
            return sol, sliced_wasserstein(sol.samples, ref, 64) / floor

        em = [(steps, error("euler_maruyama", steps)[1]) for steps in em_steps]
        print(f"\n{name} mixture, SW1 floor {floor:.5f}")
        print("  euler_maruyama: " + ", ".join(f"{k} NFE {r:.2f}" for k, r in em))
        print(f"  {'rtol':>6} {'atol':>7} {'NFE batch':>9} {'NFE/sample':>10} {'rejected':>8} "
              f"{'SW1/floor':>9} {'EM NFE, same SW1':>16} {'factor':>6}")  # fmt: skip
        for rtol, atol in tolerances:
            sol, r = error(sd.solvers.get("adaptive_sde", rtol=rtol, atol=atol))
            st = sol.stats
            per_sample = 2 * (st["accepted_mean"] + st["rejected_mean"])
            share = st["rejected_mean"] / (st["accepted_mean"] + st["rejected_mean"])
            match = next((k for k, e in em if e <= r), None)
            if match:
                cell = f"{match:>16} {per_sample / match:>6.2f}"
            else:
                cell = f"{'> ' + str(em[-1][0]):>16} {'-':>6}"
            print(f"  {rtol:>6g} {atol:>7g} {sol.nfe:>9} {per_sample:>10.0f} {share:>8.0%} "
                  f"{r:>9.2f} {cell}")  # fmt: skip
    print(f"\n({time.perf_counter() - start:.0f} s; factor < 1: the adaptive solver needs fewer "
          "score evaluations per sample than EM for the same SW1)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
