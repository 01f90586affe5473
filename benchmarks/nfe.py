"""NFE to reach 1.5x the sliced-W1 noise floor, per solver, on the built-in mixtures.

Setting of the fast-solver issue: the standard discrete linear schedule (1000 steps, eps =
1/1000), exact eps of the target, n samples, SW1 against an exact reference sample; the
floor is the median SW1 of five further exact samples of the same size against that
reference (a single exact pair is itself a draw, 0.5-2x the median). For each solver the
NFE ladder is walked upwards and the first budget whose SW1 <= 1.5 x floor is reported
(">" if none).

    python benchmarks/nfe.py            # n = 20000, about 6 minutes on 2 cores
    python benchmarks/nfe.py --quick    # n = 2000, short ladder (runs in the test suite)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import scoresde as sd
from scoresde.evaluation import steps_for_budget
from scoresde.evaluation.metrics import sliced_wasserstein
from scoresde.evaluation.targets import mixture_2d, mixture_8d

# Found by the former scoresde.evaluation.grid_search.optimise_grid (Nelder-Mead; tune_grid
# replaced it)("dpm_solver" order 3, discrete linear VP,
# mixture_2d, steps=10, samples=4096, max_evaluations=1200, objective="sw"): 10 evaluation
# times T .. t_9 (the last one moved up from eps by free_end).
OPTIMISED_GRID_2D_10 = [1.0, 0.89305, 0.6255, 0.51864, 0.41151, 0.26223, 0.14523, 0.06986,
                        0.00957, 0.00344]  # fmt: skip

SOLVERS = [  # (label, solver, options, time grid)
    ("ddpm_ancestral", "ddpm_ancestral", {}, "uniform"),
    ("euler_maruyama", "euler_maruyama", {}, "uniform"),
    ("ddim (eta=0)", "ddim", {}, "uniform"),
    ("ddim (eta=1)", "ddim", {"eta": 1.0}, "uniform"),
    ("edm_heun", "edm_heun", {}, "karras"),
    ("dpm_solver++ 2M", "dpm_solver++", {"order": 2}, "logsnr"),
    ("dpm_solver++ 3M", "dpm_solver++", {"order": 3}, "logsnr"),
    ("dpm_solver 3 (multistep)", "dpm_solver", {"order": 3}, "logsnr"),
    ("dpm_solver 3 (singlestep)", "dpm_solver_single", {"order": 3}, "logsnr"),
    ("sde_dpm_solver++ 2M", "sde_dpm_solver++", {"order": 2}, "logsnr"),
]


def first_budget(score, sde, target, solver, grid, budgets, n, ref, floor, seed=1):
    for b in budgets:
        steps = steps_for_budget(solver, b)
        if steps < 2:
            continue
        sol = sd.sample(score, sde, (n, target.dim), solver=solver, steps=steps, time_grid=grid,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
        ratio = sliced_wasserstein(sol.samples, ref) / floor
        if ratio <= 1.5:
            return b, ratio
    return None, None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    n = 2000 if args.quick else 20000
    budgets = [10, 20, 50] if args.quick else [5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 75, 100]
    solvers = SOLVERS[:1] + SOLVERS[5:8] if args.quick else SOLVERS
    sde = sd.VPSDE(sd.DiscreteSchedule.linear())
    targets = {"2-D": mixture_2d(), "8-D": mixture_8d()}
    print(f"NFE to SW1 <= 1.5 x floor — n = {n}, discrete linear schedule, "
          f"{platform.machine()} {platform.system()}, torch {torch.__version__}")  # fmt: skip
    refs = {}
    for name, g in targets.items():
        ref = g.sample(n, torch.Generator().manual_seed(101))
        floor = statistics.median(
            sliced_wasserstein(g.sample(n, torch.Generator().manual_seed(202 + k)), ref)
            for k in range(5)
        )
        score = sd.Score(lambda x, t, g=g: g.eps(x, t, sde), sde, "eps")
        refs[name] = (g, ref, floor, score)
        print(f"  floor {name}: SW1 = {floor:.4f}")
    print(f"{'solver':>28} {'grid':>9} " + " ".join(f"{k:>12}" for k in targets))
    start = time.perf_counter()
    for label, name, options, grid in solvers:
        cells = []
        for g, ref, floor, score in refs.values():
            solver = sd.solvers.get(name, **options)
            b, r = first_budget(score, sde, g, solver, grid, budgets, n, ref, floor)
            cells.append(f"{b:>5} ({r:.2f})" if b else f"{'>' + str(budgets[-1]):>12}")
        print(f"{label:>28} {grid:>9} " + " ".join(cells))
    g, ref, floor, score = refs["2-D"]
    grid = torch.tensor(OPTIMISED_GRID_2D_10, dtype=torch.float64)
    ratios = []
    dpm3 = sd.solvers.get("dpm_solver", order=3)
    for seed in (1, 2, 3, 4, 5):
        gen = torch.Generator().manual_seed(seed)
        sol = sd.sample(score, sde, (n, 2), solver=dpm3, steps=10, time_grid=grid, generator=gen)
        ratios.append(sliced_wasserstein(sol.samples, ref) / floor)
    print(
        "dpm_solver 3 on the optimised 10-point grid, 2-D, 10 NFE: SW1/floor = "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + " (seeds 1-5)"
    )
    print(
        f"({time.perf_counter() - start:.0f} s; cells: first NFE budget meeting the goal "
        "and its SW1/floor)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
