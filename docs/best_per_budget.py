"""Which solver is best at each budget, per seed, from `scoresde compare --out` directories.

    python docs/best_per_budget.py METRIC DIR [DIR ...]

For every target and budget: the solver with the lowest mean METRIC (e.g. fd, sw1, coupled)
and the solvers tied with it (difference within 2 standard errors of the difference), per
run directory (one per seed). Used for docs/digits.md; nothing here samples.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def best(records: list[dict], metric: str) -> dict[tuple[str, int], tuple[str, list[str]]]:
    out = {}
    keys = dict.fromkeys((r["target"], r["budget"]) for r in records)
    for target, budget in keys:
        rows = [
            r
            for r in records
            if (r["target"], r["budget"]) == (target, budget)
            and math.isfinite(r["metrics"][metric])
        ]
        if not rows:
            continue
        top = min(rows, key=lambda r: r["metrics"][metric])
        m0, s0 = top["metrics"][metric], top["stderr"][metric]
        tied = [
            r["solver"]
            for r in rows
            if r is not top and r["metrics"][metric] - m0 <= 2 * math.hypot(s0, r["stderr"][metric])
        ]
        out[(target, budget)] = (top["solver"], tied)
    return out


def main(argv: list[str]) -> int:
    metric, dirs = argv[0], argv[1:]
    runs = [json.loads((Path(d) / "results.json").read_text()) for d in dirs]
    tables = [best(run["records"], metric) for run in runs]
    seeds = [run["settings"]["seed"] for run in runs]
    cols = " | ".join(f"lowest {metric}, seed {s} (and tied)" for s in seeds)
    print(f"| target | budget | {cols} |")
    print("|---|---|" + "---|" * len(seeds))
    for key in tables[0]:
        cells = []
        for table in tables:
            solver, tied = table.get(key, ("-", []))
            if len(tied) > 3:
                cells.append(f"{solver} (+{len(tied)} tied)")
            else:
                cells.append(", ".join([solver, *tied]) if tied else solver)
        print(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
