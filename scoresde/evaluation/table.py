"""``compare``'s records as text: the table and the floor summary."""

from __future__ import annotations

import math
from collections.abc import Sequence

from scoresde.evaluation.estimates import EQUIVALENCE_LEVEL
from scoresde.evaluation.record import Record
from scoresde.evaluation.verdicts import (
    PATHWISE_FRACTION,
    convergence_orders,
    fewest_nfe_at_floor,
    fewest_nfe_pathwise,
    inversions,
)

MARKS = {"at floor": "=", "differs": "x", "undetermined": "?"}

TABLE_FORMATS = {
    "sw1": ".4f",
    "mmd": ".1e",
    "mode_err": ".4f",
    "cov_err": ".4f",
    "xent": ".3f",
    "coupled": ".1e",
}  # a model's evaluator adds its own (Record.extra["evaluator"]["formats"])


def _formats(record: Record) -> dict[str, str]:
    """The table formats of a record's metrics: the generic ones and its evaluator's."""
    data = record.extra.get("evaluator", {}).get("formats", {})
    return {**dict(list(TABLE_FORMATS.items())[:-1]), **data, "coupled": TABLE_FORMATS["coupled"]}


def _cell(mean: float, se: float, fmt: str) -> str:
    if math.isnan(mean):
        return "-"
    if math.isnan(se):
        return format(mean, fmt)
    return f"{mean:{fmt}}±{se:{fmt}}"


def _row(label: str, means: dict, ses: dict, widths: dict[str, int], fmts: dict) -> str:
    nan = math.nan
    return label + " ".join(
        f"{_cell(means.get(k, nan), ses.get(k, nan), fmts[k]):>{widths[k]}}" for k in widths
    )


def format_table(records: Sequence[Record]) -> str:
    """A plain-text table, one row per run: mean ± standard error over the replicates, the
    smallest p-value of its tests against exact sampling, and its verdict: ``=`` at the floor,
    ``x`` differs, ``?`` undetermined. The row "margin" gives each metric's delta."""
    lines = []
    width = max([20] + [len(r.solver) + 1 for r in records])
    for target in dict.fromkeys(r.target for r in records):
        rows = sorted((r for r in records if r.target == target), key=lambda r: (r.budget, r.nfe))
        first = rows[0]
        fmts = _formats(first)
        keys = [k for k in fmts if k in first.metrics]
        widths = {
            k: max(
                [len(k)]
                + [len(_cell(r.metrics[k], r.stderr[k], fmts[k])) for r in rows]
                + [len(_cell(first.floor[k], first.floor_stderr[k], fmts[k]))]
            )
            for k in keys
        }
        grids = ", ".join(dict.fromkeys(r.time_grid for r in rows))
        head = f"{'budget':>6} {'solver':<{width}} {'NFE':>5} " + " ".join(
            f"{k:>{widths[k]}}" for k in keys
        )
        head += f" {'min p':>7} {'wall s':>7}"
        lines += [
            f"target {target}  (schedule {first.schedule}, grid {grids}; {first.replicates} "
            f"replicates of n = {first.samples}; mean ± standard error)",
            f"reference: {first.extra.get('reference')}"
            + (
                f"; reverse SDE: {first.extra['sde_reference']}"
                if "sde_reference" in first.extra
                else ""
            ),
            head,
            "-" * len(head),
        ]
        if "exact_sampler" in first.extra:
            ex, ex_se = first.extra["exact_sampler"], first.extra["exact_sampler_stderr"]
            mark = MARKS.get(first.extra.get("exact_sampler_verdict", ""), " ")
            label = f"{'exact':>6} {mark}{'target sampler':<{width - 1}} {'':>5} "
            p = first.extra["exact_sampler_p_sw1"]
            lines.append(_row(label, ex, ex_se, widths, fmts) + f" {p:7.3f}")
        label = f"{'floor':>6} {'reference (exact flow)':<{width}} {'':>5} "
        lines.append(_row(label, first.floor, first.floor_stderr, widths, fmts))
        if "data_floor" in first.extra:
            name = first.extra.get("evaluator", {}).get("floor_label", "held-out data")
            label = f"{'data':>6} {name:<{width}} {'':>5} "
            data, data_se = first.extra["data_floor"], first.extra["data_floor_stderr"]
            lines.append(_row(label, data, data_se, widths, fmts))
        if first.margin:
            label = f"{'margin':>6} {'delta: exact vs exact':<{width}} {'':>5} "
            lines.append(_row(label, first.margin, {}, widths, fmts))
        for r in rows:
            mark = MARKS.get(r.verdict, " ")
            label = f"{r.budget:>6} {mark}{r.solver:<{width - 1}} {r.nfe:>5} "
            lines.append(
                _row(label, r.metrics, r.stderr, widths, fmts)
                + f" {min(r.p_value.values()):7.3f} {r.wall_s:7.2f}"
            )
        lines.append("")
    r0 = records[0]
    k = len(r0.p_value)
    if "exact_sampler" in r0.extra:
        tests = (
            "MMD² against 0 and xent against the target's entropy, the others against the "
            "exact reference's values (Welch); one-sided but xent"
        )
    else:
        tests = (
            "Welch, against the converged reference's values; one-sided but "
            + ", ".join(k for k in r0.p_value if k in _two_sided(r0))
        ).removesuffix(" but ")
    lines.append(
        f"= at the floor: each of the {k} metrics is within its margin of exact sampling (its "
        f"{1 - 2 * EQUIVALENCE_LEVEL:.0%} confidence interval inside ±delta, two one-sided "
        f"tests at {EQUIVALENCE_LEVEL:g}; one-sided for distances). margin: delta = 1.96 √2 sd, "
        "the spread of the metric between two independent exact sample sets of the same n "
        "(sd: the floor's replicate sd); a difference smaller than delta may still be "
        "detectable (min p small). x differs: a metric differs from exact sampling "
        f"(t-tests over the {r0.replicates} replicates: {tests}; some p < "
        f"{_alpha(records):g}/{k}). ? undetermined: neither; the summary gives the "
        f"replicates that would decide. min p: the smallest of the {k} p-values. coupled: "
        "E|x - x_ref| from the same x_T (and Brownian path), '-' where the solver has no "
        "pathwise limit."
        + (
            " exact: the target's own sampler, judged like a solver (p: Welch test of its SW1 "
            "against the reference's)."
            if "exact_sampler" in r0.extra
            else ""
        )
        + " Adaptive solvers: NFE is the mean per sample."
    )
    footnote = r0.extra.get("evaluator", {}).get("footnote")
    if "data_floor" in r0.extra and footnote:
        lines.append(footnote)
    return "\n".join(lines)


def _two_sided(record: Record) -> tuple[str, ...]:
    return ("xent", *record.extra.get("evaluator", {}).get("two_sided", ()))


def _alpha(records: Sequence[Record]) -> float:
    return records[0].extra["alpha"]


def format_floor_summary(records: Sequence[Record]) -> str:
    """One line per solver: per target, the fewest NFE at the floor (from there on every run
    is), the fewest NFE whose coupled error is below the floor's noise (``pathwise``), and the
    measured convergence order of its coupled error; then the undetermined runs with the
    replicates that would decide them."""
    first = fewest_nfe_at_floor(records)
    pathwise = fewest_nfe_pathwise(records)
    orders = convergence_orders(records)
    targets = list(dict.fromkeys(r.target for r in records))
    solvers = list(dict.fromkeys(r.solver for r in records))
    most: dict[tuple[str, str], int] = {}
    for r in records:
        most[(r.target, r.solver)] = max(r.nfe, most.get((r.target, r.solver), 0))
    width = max([20] + [len(s) for s in solvers])
    col = max([10] + [len(t) for t in targets])
    lines = [
        "fewest NFE at the floor (every metric within its margin of exact sampling, at that NFE "
        "and every larger one run); pathwise: fewest NFE from which the coupled error is below "
        f"{PATHWISE_FRACTION:g} x the floor's SW1 (noise-free: it ranks discretisation error); "
        "order p of coupled error ~ NFE^-p",
        f"{'':<{width}} " + " ".join(f"{t:>{col}} {'':>8} {'':>5}" for t in targets),
        f"{'solver':<{width}} "
        + " ".join(f"{'at floor':>{col}} {'pathwise':>8} {'order':>5}" for _ in targets),
    ]
    for solver in solvers:
        cells = []
        for t in targets:
            key = (t, solver)
            if key not in first:
                cells.append(f"{'':>{col}} {'':>8} {'':>5}")
                continue
            p, never = orders[key], f">{most[key]}"
            at = str(first[key]) if first[key] is not None else never
            path = str(pathwise[key]) if pathwise[key] is not None else never
            if all(math.isnan(r.metrics["coupled"]) for r in _runs(records, key)):
                path = "-"  # no pathwise limit
            order = f"{p:5.2f}" if p is not None else f"{'-':>5}"
            cells.append(f"{at:>{col}} {path:>8} {order}")
        lines.append(f"{solver:<{width}} " + " ".join(cells))
    for target, a, b, nfe in inversions(records, first):
        lines.append(
            f"note: on {target} the floor column puts {a} ({nfe}) before {b}, whose coupled "
            "error is lower at that budget; the pathwise column ranks them by that error"
        )
    lines += _undetermined_lines(records)
    return "\n".join(lines)


def _runs(records: Sequence[Record], key: tuple[str, str]) -> list[Record]:
    return [r for r in records if (r.target, r.solver) == key]


def _undetermined_lines(records: Sequence[Record]) -> list[str]:
    """The runs the design could not decide, with the replicates of the same n that would."""
    runs = [r for r in records if r.verdict == "undetermined"]
    if not runs:
        return []
    lines = [
        "undetermined at this design (neither within the margins nor significantly different); "
        "replicates of the same n that would decide if the estimates held:"
    ]
    for key in dict.fromkeys((r.target, r.solver) for r in runs):
        cells = [
            f"{r.nfe} (R >= {r.replicates_to_decide})"
            if r.replicates_to_decide is not None
            else f"{r.nfe}"
            for r in sorted(_runs(runs, key), key=lambda r: r.nfe)
        ]
        lines.append(f"  {key[0]} {key[1]}: NFE " + ", ".join(cells))
    return lines
