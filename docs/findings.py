"""Tables for docs/findings.md from `scoresde compare --out` directories (results.json).

    python docs/findings.py seeds DIR_SEED0 DIR_SEED1 DIR_SEED2
        fewest NFE at the floor (equivalence rule) / pathwise (coupled error below a quarter
        of the floor's SW1) and coupled-error order per solver and target, per seed
    python docs/findings.py versus DIR_A DIR_B [--solvers a,b,...]
        the same solver at the same budget in two runs (e.g. two schedules or grids, or one
        run against itself for two solvers with --pair a,b): the difference of each metric
        with its standard error and Welch p-value; "no difference at this n" when p >= 0.01
    python docs/findings.py beats DIR_SEED0 DIR_SEED1 ... --pair challenger,baseline [--pair ...]
        per target and budget: the challenger's change of a metric (default coupled) relative
        to the baseline, averaged over the seeds, and at how many seeds it is significantly
        lower (v) or higher (^) by the Welch test at 0.01

Nothing here samples: it reads the records the main job wrote.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from scipy import stats

LEVEL = 0.01


def _load(path: str) -> dict:
    return json.loads((Path(path) / "results.json").read_text())


def seeds_table(dirs: list[str]) -> str:
    runs = [_load(d) for d in dirs]
    seeds = [r["settings"]["seed"] for r in runs]
    targets = list(runs[0]["summary"])
    lines = []
    for target in targets:
        cols = " | ".join(f"seed {s}" for s in seeds)
        head = f"| solver | {cols} | order (seed {seeds[0]}) |"
        lines += [f"**{target}**: fewest NFE at the floor / pathwise", "", head,
                  "|" + "---|" * (len(seeds) + 2)]  # fmt: skip
        for solver, v in runs[0]["summary"][target].items():
            cells = []
            for run in runs:
                verdict = run["summary"][target][solver]
                most = max(r["nfe"] for r in run["records"]
                           if r["target"] == target and r["solver"] == solver)  # fmt: skip
                pathwise = [r["metrics"]["coupled"] for r in run["records"]
                            if r["target"] == target and r["solver"] == solver]  # fmt: skip
                cell = []
                for key in ("fewest_nfe_at_floor", "fewest_nfe_pathwise"):
                    nfe = verdict[key]
                    if key == "fewest_nfe_pathwise" and all(c != c for c in pathwise):
                        cell.append("-")  # no pathwise limit
                    else:
                        cell.append(str(nfe) if nfe is not None else f">{most}")
                cells.append(" / ".join(cell))
            order = v["order"]
            lines.append(
                f"| {solver} | " + " | ".join(cells) + f" | {order:.2f} |"
                if order is not None
                else f"| {solver} | " + " | ".join(cells) + " | - |"
            )
        lines.append("")
    return "\n".join(lines)


def _values(record: dict, key: str) -> tuple[float, float]:
    return record["metrics"][key], record["stderr"][key]


def versus_table(a_dir: str, b_dir: str, solvers: list[str] | None, pair: list[str] | None,
                 keys=("sw1", "xent", "coupled")) -> str:  # fmt: skip
    """Differences b - a with their standard errors and two-sided Welch p-values computed
    from the replicate means and standard errors."""
    a, b = _load(a_dir), _load(b_dir)
    out = ["| target | budget | solver | " + " | ".join(f"Δ{k} (p)" for k in keys) + " |",
           "|" + "---|" * (3 + len(keys))]  # fmt: skip
    index_b = {(r["target"], r["budget"], r["solver"]): r for r in b["records"]}
    for ra in a["records"]:
        if pair is not None:
            if ra["solver"] != pair[0]:
                continue
            key = (ra["target"], ra["budget"], pair[1])
        else:
            if solvers and ra["solver"] not in solvers:
                continue
            key = (ra["target"], ra["budget"], ra["solver"])
        rb = index_b.get(key)
        if rb is None:
            continue
        cells = []
        for k in keys:
            (ma, sa), (mb, sb) = _values(ra, k), _values(rb, k)
            if not all(math.isfinite(v) for v in (ma, sa, mb, sb)):
                cells.append("-")
                continue
            se = math.hypot(sa, sb)
            p = _welch_two_sided(mb - ma, sa, sb, ra["replicates"], rb["replicates"])
            verdict = "" if p < LEVEL else " n.s."
            cells.append(f"{mb - ma:+.3g} ± {se:.2g} (p={p:.2g}{verdict})")
        label = ra["solver"] if pair is None else f"{pair[1]} - {pair[0]}"
        out.append(f"| {ra['target']} | {ra['budget']} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _welch_two_sided(diff: float, sa: float, sb: float, ra: int, rb: int) -> float:
    """Welch's test from two means' standard errors, with Welch-Satterthwaite degrees of
    freedom. Within one run the two solvers share x_T, which only makes it conservative."""
    se2 = sa * sa + sb * sb
    if se2 == 0:
        return 0.0 if diff != 0 else 1.0
    df = se2 * se2 / (sa**4 / (ra - 1) + sb**4 / (rb - 1))
    return float(2 * stats.t.sf(abs(diff) / math.sqrt(se2), df))


def beats_table(dirs: list[str], pairs: list[list[str]], metric: str = "coupled") -> str:
    """Rows: challenger - baseline per target; columns: budgets; cells: mean relative change
    over the seeds and the count of seeds with a significant decrease (v) or increase (^)."""
    runs = [_load(d) for d in dirs]
    index = [{(r["target"], r["budget"], r["solver"]): r for r in run["records"]} for run in runs]
    targets = list(runs[0]["summary"])
    budgets = sorted({r["budget"] for r in runs[0]["records"]})
    out = [f"| target | {metric}: challenger vs baseline | " + " | ".join(map(str, budgets)) + " |",
           "|" + "---|" * (2 + len(budgets))]  # fmt: skip
    for target in targets:
        for challenger, baseline in pairs:
            cells = []
            for budget in budgets:
                rel, down, up = [], 0, 0
                for idx in index:
                    ra = idx.get((target, budget, baseline))
                    rb = idx.get((target, budget, challenger))
                    if ra is None or rb is None:
                        continue
                    (ma, sa), (mb, sb) = _values(ra, metric), _values(rb, metric)
                    rel.append((mb - ma) / ma)
                    if (
                        _welch_two_sided(mb - ma, sa, sb, ra["replicates"], rb["replicates"])
                        < LEVEL
                    ):
                        down, up = down + (mb < ma), up + (mb > ma)
                if not rel:
                    cells.append("-")
                    continue
                marks = f" {down}v" * (down > 0) + f" {up}^" * (up > 0)
                cells.append(f"{100 * sum(rel) / len(rel):+.0f}%{marks}")
            out.append(f"| {target} | {challenger} vs {baseline} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seeds")
    s.add_argument("dirs", nargs="+")
    v = sub.add_parser("versus")
    v.add_argument("a")
    v.add_argument("b")
    v.add_argument("--solvers", default=None)
    v.add_argument("--pair", default=None)
    b = sub.add_parser("beats")
    b.add_argument("dirs", nargs="+")
    b.add_argument("--pair", action="append", required=True, help="challenger,baseline")
    b.add_argument("--metric", default="coupled")
    args = p.parse_args()
    if args.cmd == "seeds":
        print(seeds_table(args.dirs))
    elif args.cmd == "beats":
        print(beats_table(args.dirs, [x.split(",") for x in args.pair], args.metric))
    else:
        solvers = args.solvers.split(",") if args.solvers else None
        pair = args.pair.split(",") if args.pair else None
        print(versus_table(args.a, args.b, solvers, pair))


if __name__ == "__main__":
    main()
