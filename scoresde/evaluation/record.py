"""One run's result: ``Record`` (a solver at a budget on one problem)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Record:
    """One solver at one budget on one problem. ``metrics`` are replicate means, ``stderr``
    their standard errors, ``p_value`` the significance tests against exact sampling (all
    metrics but ``coupled``), ``floor`` / ``floor_stderr`` the reference's own values.
    ``verdict`` is "at floor" (every metric within its ``margin`` of exact sampling, by the
    equivalence test of ``scoresde.evaluation.estimates``; ``at_floor`` says the same),
    "differs" or "undetermined", with ``replicates_to_decide`` for the last."""

    target: str
    solver: str
    config: str
    budget: int
    nfe: int
    steps: int
    schedule: str
    time_grid: str
    samples: int
    replicates: int
    seed: int
    wall_s: float
    metrics: dict[str, float]
    stderr: dict[str, float]
    p_value: dict[str, float]
    at_floor: bool
    floor: dict[str, float]
    floor_stderr: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)
    verdict: str = ""
    margin: dict[str, float] = field(default_factory=dict)
    replicates_to_decide: int | None = None
