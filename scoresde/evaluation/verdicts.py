"""Verdicts across budgets: the fewest NFE at the floor and the convergence order."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from scoresde.evaluation import metrics
from scoresde.evaluation.record import Record


def fewest_nfe_at_floor(records: Sequence[Record]) -> dict[tuple[str, str], int | None]:
    """{(target, solver): the smallest NFE from which every run of that solver is at the floor
    (no metric significantly different from exact sampling), or None if its largest run is
    not}."""
    out: dict[tuple[str, str], int | None] = {}
    for key in dict.fromkeys((r.target, r.solver) for r in records):
        runs = sorted((r for r in records if (r.target, r.solver) == key), key=lambda r: r.nfe)
        first = None
        for r in runs:
            if not r.at_floor:
                first = None
            elif first is None:
                first = r.nfe
        out[key] = first
    return out


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
