"""A problem compare runs solvers on: an analytic target under a schedule, or a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scoresde.core.adapters import Score
from scoresde.core.sde import SDE, VPSDE
from scoresde.evaluation.settings import SCHEDULES
from scoresde.evaluation.targets import TARGETS, GaussianMixture
from scoresde.models import ModelSpec


@dataclass
class Problem:
    name: str
    sde: SDE
    score: Score
    target: GaussianMixture | None
    event_shape: tuple[int, ...]
    evaluator: Any = None
    model: ModelSpec | None = None  # for its per-sample conditions


def build_problem(target: str, schedule: str, model: tuple[str, ModelSpec] | None) -> Problem:
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    if model is not None:
        name, spec = model
        return Problem(name, spec.sde, spec.score, None, spec.shape, spec.evaluator, spec)
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    sde = VPSDE(SCHEDULES[schedule]())
    g: GaussianMixture = TARGETS[target]()
    score = Score(lambda x, t: g.eps(x, t, sde), sde, "eps")
    return Problem(target, sde, score, g, (g.dim,))
