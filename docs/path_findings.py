"""Which Gaussian path samples in fewest steps: the runs and the table of docs/paths.md.

    python docs/path_findings.py run SEED [SEED ...]   compare on every path, writes
                                                     docs/findings/paths/seed<SEED>.json
        [--path=NAME ...]                            only these paths, replacing their records
    python docs/path_findings.py table SEED [SEED ...] the markdown tables from those files

Each seed runs ``scoresde.compare`` on gmm2d and gmm8d for every path in PATHS, each on its
natural grid and on the grid uniform in t, with the solvers in SOLVERS at the budgets in
BUDGETS (400 samples x 5 replicates). "At the floor" is compare's verdict at that NFE and
every larger one run (the stored seed files were made under the former rule, no significant
difference; a rerun gives the equivalence rule's). The coupled error is
E|x - x_ref| against the same path's converged reference from the same x_T (and Brownian
path for the SDE solvers): each path's own discretisation error, in the data's units.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "findings" / "paths"
# path -> its natural grid (VP: uniform in log-SNR, DPM-Solver's; EDM: Karras's; flows:
# uniform in t, i.e. in sigma, as diffusers' FlowMatch schedulers step)
PATHS = {
    "vp-linear": "logsnr",
    "vp-cosine": "logsnr",
    "rectified-flow": "uniform",
    "rectified-flow:shift=3": "uniform",
    "edm": "karras",
}
SOLVERS = (
    "ode_euler",
    "ode_heun",
    "dpm_solver++:order=2",
    "dpm_solver++:order=3",
    "unipc",
    "deis",
    "euler_maruyama",
    "ddpm_ancestral",
)
BUDGETS = (5, 10, 20, 50, 100, 200)
COUPLED_AT = (5, 10, 20)
SAMPLES, REPLICATES = 400, 5
# the reverse-SDE reference of EM and ancestral sampling: 1000 EM steps on the same Brownian
# path (its error is far below the coupled errors reported, at 5-20 NFE)
SDE_REFERENCE = ("euler_maruyama", 1000)


def run(seed: int, only: list[str] | None = None) -> None:
    """Run every path (or the paths in ``only``, replacing their records in the seed's file)."""
    import scoresde as sd

    path_file = OUT / f"seed{seed}.json"
    records = []
    if only:
        records = [r for r in json.loads(path_file.read_text()) if r["path"] not in only]
    for path, natural in PATHS.items():
        if only and path not in only:
            continue
        for grid in dict.fromkeys((natural, "uniform")):
            for r in sd.compare(
                targets=("gmm2d", "gmm8d"),
                solvers=SOLVERS,
                nfe=BUDGETS,
                path=path,
                time_grid=grid,
                samples=SAMPLES,
                replicates=REPLICATES,
                seed=seed,
                sde_reference=SDE_REFERENCE,
            ):
                records.append(
                    {
                        "target": r.target.split("/")[0],
                        "path": path,
                        "grid": grid,
                        "natural": grid == natural,
                        "solver": r.solver,
                        "nfe": r.nfe,
                        "budget": r.budget,
                        "at_floor": r.at_floor,
                        "coupled": r.metrics.get("coupled"),
                        "coupled_se": r.stderr.get("coupled"),
                    }
                )
            print(f"seed {seed}: {path} on {grid} done", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    path_file.write_text(json.dumps(records, indent=1))


def _fewest(rows: list[dict]) -> int | None:
    first = None
    for r in sorted(rows, key=lambda r: r["nfe"]):
        if not r["at_floor"]:
            first = None
        elif first is None:
            first = r["nfe"]
    return first


def _key(r: dict) -> tuple[str, str, str, str]:
    return r["target"], r["path"], r["grid"], r["solver"]


def table(seeds: list[int]) -> str:
    runs = {s: json.loads((OUT / f"seed{s}.json").read_text()) for s in seeds}
    lines = []
    for target in ("gmm2d", "gmm8d"):
        lines += [f"**{target}**: fewest NFE at the floor (seeds {', '.join(map(str, seeds))}) "
                  f"and coupled error at {', '.join(map(str, COUPLED_AT))} NFE (mean of the "
                  "seeds); natural grid, then uniform in t", ""]  # fmt: skip
        head = "| solver | path | grid | fewest NFE | " + " | ".join(
            f"coupled @{b}" for b in COUPLED_AT
        )
        lines += [head + " |", "|" + "---|" * (4 + len(COUPLED_AT))]
        best_lines = []
        for solver in SOLVERS:
            cells: dict[tuple[str, str], dict[int, list[float]]] = {}
            for path, natural in PATHS.items():
                for grid in dict.fromkeys((natural, "uniform")):
                    fewest, coupled = [], {b: [] for b in COUPLED_AT}
                    for recs in runs.values():
                        key = (target, path, grid, solver)
                        rows = [r for r in recs if _key(r) == key]
                        f = _fewest(rows)
                        fewest.append(
                            str(f) if f is not None else f">{max(r['nfe'] for r in rows)}"
                        )
                        for r in rows:
                            if r["budget"] in coupled and r["coupled"] is not None:
                                coupled[r["budget"]].append(r["coupled"])
                    cells[(path, grid)] = coupled
                    c = " | ".join(
                        f"{np.mean(v):.3g}" if len(v) == len(seeds) else "-"
                        for v in coupled.values()
                    )
                    lines.append(f"| {solver} | {path} | {grid} | {' / '.join(fewest)} | {c} |")
            for b in COUPLED_AT:  # a path is best only where it wins at every seed
                per_seed = [
                    min(
                        cells,
                        key=lambda k: cells[k][b][i] if len(cells[k][b]) == len(seeds) else np.inf,
                    )
                    for i in range(len(seeds))
                ]
                if len(set(per_seed)) == 1 and len(cells[per_seed[0]][b]) == len(seeds):
                    path, grid = per_seed[0]
                    best_lines.append(f"- {solver} at {b} NFE: {path} on {grid} at all seeds")
                else:
                    best_lines.append(f"- {solver} at {b} NFE: no path wins at all seeds")
        lines += ["", "Lowest coupled error:", "", *best_lines, ""]
    return "\n".join(lines)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    only = [a.removeprefix("--path=") for a in args if a.startswith("--path=")] or None
    seeds = [int(a) for a in args if not a.startswith("--path=")]
    if command == "run":
        for s in seeds:
            run(s, only)
    elif command == "table":
        print(table(seeds))
    else:
        raise SystemExit(__doc__)
