"""Adaptive SDE solver (Gotta Go Fast) versus Euler–Maruyama at equal error.

Setting of the fast-solver issue: the standard discrete linear schedule, exact eps of the
built-in mixtures, n samples, sliced-W1 against an exact reference sample, as a multiple of
the floor (the median SW1 of five further exact samples against the same reference). Every
figure is the mean over SEEDS. Euler–Maruyama runs on uniform grids (EM_STEPS); for each
adaptive row the table gives the EM budget with the same SW1, interpolated on EM's log-log
error curve, and the factor (adaptive NFE per sample) / (that EM NFE): below 1, the adaptive
solver needs fewer score evaluations for the same error. The adaptive solver calls the score
on the still-running rows only, so its NFE per sample is also what the batch costs.

    python benchmarks/adaptive.py            # n = 100000, about 5 minutes on 2 cores
    python benchmarks/adaptive.py --quick    # n = 2000, one seed (runs in the test suite)
"""

from __future__ import annotations

import argparse
import itertools
import math
import platform
import statistics
import time

import torch

import scoresde as sd
from scoresde.evaluation.metrics import sliced_wasserstein
from scoresde.evaluation.targets import mixture_2d, mixture_8d

# (rtol, atol, ceiling_steps); (0.05, 0.0078, 25) is the default, ceiling None the paper's
SETTINGS = [
    (0.2, 0.05, 25),
    (0.1, 0.02, 25),
    (0.05, 0.0078, 25),
    (0.1, 0.02, None),
    (0.05, 0.0078, None),
]
EM_STEPS = [35, 50, 70, 100, 140, 200]
SEEDS = (1, 2)


def em_equivalent(ladder: list[tuple[int, float]], error: float) -> float | None:
    """EM NFE at which EM's error falls to ``error`` (log-log interpolation), or None."""
    for (n0, e0), (n1, e1) in itertools.pairwise(ladder):
        if e0 > error >= e1:
            a = math.log(error / e0) / math.log(e1 / e0)
            return n0 * (n1 / n0) ** a
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1 if args.quick else 2)
    n = 2000 if args.quick else 100_000
    settings = SETTINGS[1:3] if args.quick else SETTINGS
    em_steps = [25, 50, 100] if args.quick else EM_STEPS
    seeds = SEEDS[:1] if args.quick else SEEDS
    sde = sd.VPSDE(sd.DiscreteSchedule.linear())
    machine = f"{platform.machine()} {platform.system()}, torch {torch.__version__}"
    print(f"adaptive_sde vs euler_maruyama at equal SW1 — n = {n}, seeds {seeds}, discrete "
          f"linear schedule, {machine}")  # fmt: skip
    start = time.perf_counter()
    for name, g in {"2-D": mixture_2d(), "8-D": mixture_8d()}.items():
        ref = g.sample(n, torch.Generator().manual_seed(101))
        floor = statistics.median(
            sliced_wasserstein(g.sample(n, torch.Generator().manual_seed(202 + k)), ref, 64)
            for k in range(5)
        )
        score = sd.Score(lambda x, t, g=g: g.eps(x, t, sde), sde, "eps")

        def run(solver, steps=2, score=score, shape=(n, g.dim), ref=ref, floor=floor):
            # an adaptive solver takes only eps from the grid: two steps (T, eps, 0) suffice
            out = []
            for seed in seeds:
                gen = torch.Generator().manual_seed(seed)
                sol = sd.sample(score, sde, shape, solver=solver, steps=steps, generator=gen)
                out.append((sol, sliced_wasserstein(sol.samples, ref, 64) / floor))
            return out

        em = [(k, statistics.mean(r for _, r in run("euler_maruyama", k))) for k in em_steps]
        print(f"\n{name} mixture, SW1 floor {floor:.5f}")
        print("  euler_maruyama: " + ", ".join(f"{k} NFE {r:.2f}" for k, r in em))
        print(f"  {'rtol':>5} {'atol':>6} {'ceiling':>7} {'NFE/sample':>10} {'rejected':>8} "
              f"{'SW1/floor (range)':>18} {'EM NFE, same SW1':>16} {'factor':>6}")  # fmt: skip
        for rtol, atol, ceiling in settings:
            solver = sd.solvers.get("adaptive_sde", rtol=rtol, atol=atol, ceiling_steps=ceiling)
            runs = run(solver)
            nfe = statistics.mean(sol.stats["nfe_per_sample"] for sol, _ in runs)
            share = statistics.mean(
                st["rejected_mean"] / (st["accepted_mean"] + st["rejected_mean"])
                for st in (sol.stats for sol, _ in runs)
            )
            errors = [r for _, r in runs]
            r = statistics.mean(errors)
            match = em_equivalent(em, r)
            if match is not None:
                cell = f"{match:>16.0f} {nfe / match:>6.2f}"
            elif r > em[0][1]:
                cell = f"{'< ' + str(em[0][0]):>16} {'> ' + format(nfe / em[0][0], '.1f'):>6}"
            else:
                cell = f"{'> ' + str(em[-1][0]):>16} {'< ' + format(nfe / em[-1][0], '.2f'):>6}"
            span = f"{r:.2f} ({min(errors):.2f}-{max(errors):.2f})"
            print(f"  {rtol:>5g} {atol:>6g} {ceiling!s:>7} {nfe:>10.0f} {share:>8.0%} "
                  f"{span:>18} {cell}")  # fmt: skip
    print(f"\n({time.perf_counter() - start:.0f} s; factor < 1: the adaptive solver needs fewer "
          "score evaluations per sample than EM for the same SW1)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
