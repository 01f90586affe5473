"""Verdicts across budgets: the fewest NFE at the floor, the fewest NFE whose pathwise error
is below the floor's own noise, and the convergence order."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from scoresde.evaluation import metrics
from scoresde.evaluation.record import Record

PATHWISE_FRACTION = 0.25  # of the floor's own SW1: the pathwise column's threshold


def _fewest_from(
    records: Sequence[Record], passes: Callable[[Record], bool]
) -> dict[tuple[str, str], int | None]:
    """{(target, solver): the smallest NFE from which every run passes, None if the largest
    run does not}."""
    out: dict[tuple[str, str], int | None] = {}
    for key in dict.fromkeys((r.target, r.solver) for r in records):
        runs = sorted((r for r in records if (r.target, r.solver) == key), key=lambda r: r.nfe)
        first = None
        for r in runs:
            if not passes(r):
                first = None
            elif first is None:
                first = r.nfe
        out[key] = first
    return out


def fewest_nfe_at_floor(records: Sequence[Record]) -> dict[tuple[str, str], int | None]:
    """{(target, solver): the smallest NFE from which every run of that solver is at the floor
    (every metric within its margin of exact sampling, ``Record.verdict``), or None if its
    largest run is not}."""
    return _fewest_from(records, lambda r: r.at_floor)


def pathwise_threshold(record: Record) -> float:
    """PATHWISE_FRACTION x the floor's SW1 (exact sampling's own distance to the target at
    this n, its sampling noise): the coupled error below which a run is pathwise at the floor.
    SW1 is 1-Lipschitz in each sample, so a run's SW1 differs from its reference's by at most
    its coupled error E|x - x_ref|, replicate by replicate: under the threshold,
    discretisation moves SW1 by less than a quarter of what sampling alone leaves. The floor's
    SW1 is a mean over the replicates, so the threshold varies little with the seed."""
    return PATHWISE_FRACTION * record.floor.get("sw1", math.nan)


def fewest_nfe_pathwise(records: Sequence[Record]) -> dict[tuple[str, str], int | None]:
    """{(target, solver): the smallest NFE from which every run's coupled error is below
    ``pathwise_threshold``}, None if the largest run's is not or the solver has no pathwise
    limit. Noise-free (the coupled error barely varies with the draw), so it cannot be won by
    luck and ranks solvers in the order of their discretisation error."""
    return _fewest_from(records, lambda r: r.metrics["coupled"] < pathwise_threshold(r))


ORDER_MIN_ERROR = {torch.float32: 1e-4, torch.float64: 1e-8}  # coupled errors below: round-off


def convergence_orders(
    records: Sequence[Record], min_error: float = ORDER_MIN_ERROR[torch.float32]
) -> dict[tuple[str, str], float | None]:
    """{(target, solver): the measured order p of coupled error ~ NFE^-p}, the least-squares
    slope over the runs whose coupled error exceeds ``min_error`` (float32 round-off leaves
    converged runs at 1e-6..1e-5); None without a pathwise limit or with fewer than 3 runs."""
    out: dict[tuple[str, str], float | None] = {}
    for key in dict.fromkeys((r.target, r.solver) for r in records):
        pts = sorted(
            (r.nfe, r.metrics["coupled"])
            for r in records
            if (r.target, r.solver) == key
            and math.isfinite(r.metrics["coupled"])
            and r.metrics["coupled"] > min_error
        )
        nfe = [n for n, _ in pts]
        out[key] = (
            metrics.convergence_order(nfe, [e for _, e in pts]) if len(set(nfe)) >= 3 else None
        )
    return out


def inversions(
    records: Sequence[Record], column: dict[tuple[str, str], int | None]
) -> list[tuple[str, str, str, int]]:
    """The pairs a verdict column ranks against their discretisation error: (target, a, b,
    nfe) where ``column`` puts solver a at ``nfe``, at a smaller budget than solver b (or b
    never), although at a's budget b's run has the lower coupled error. Only solvers with
    the same pathwise limit are compared (their coupled errors share a reference)."""
    budget = {(r.target, r.solver, r.nfe): r.budget for r in records}
    by = {(r.target, r.solver, r.budget): r for r in records}
    out = []
    for (target, a), nfe in column.items():
        if nfe is None:
            continue
        ra = by[(target, a, budget[(target, a, nfe)])]
        for (t, b), other in column.items():
            if t != target or b == a:
                continue
            if other is not None and budget[(target, b, other)] <= ra.budget:
                continue
            rb = by.get((target, b, ra.budget))
            if (
                rb is not None
                and rb.extra.get("pathwise_limit") == ra.extra.get("pathwise_limit")
                and rb.metrics["coupled"] < ra.metrics["coupled"]
            ):
                out.append((target, a, b, nfe))
    return out
