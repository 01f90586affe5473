"""A problem compare runs solvers on: an analytic target under a schedule or any Gaussian path,
or a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scoresde.core.adapters import Score
from scoresde.core.sde import SDE, VPSDE
from scoresde.evaluation.settings import SCHEDULES
from scoresde.evaluation.targets import TARGETS, GaussianMixture
from scoresde.models import ModelSpec
from scoresde.solvers.zero_terminal import is_zero_terminal


@dataclass
class Problem:
    name: str
    sde: SDE
    score: Score
    target: GaussianMixture | None
    event_shape: tuple[int, ...]
    evaluator: Any = None
    model: ModelSpec | None = None  # for its per-sample conditions


def build_problem(
    target: str, schedule: str, model: tuple[str, ModelSpec] | None, sde: SDE | None = None
) -> Problem:
    """The problem of ``target`` on ``sde`` (default: the VP SDE of ``schedule``), or of a
    loaded ``model``. The target's exact score enters as an eps network, or, on a path with
    m(T) = 0, as an x0 network (the one prediction that is finite there)."""
    if sde is None and model is None and schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    if model is not None:
        name, spec = model
        return Problem(name, spec.sde, spec.score, None, spec.shape, spec.evaluator, spec)
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    sde = VPSDE(SCHEDULES[schedule]()) if sde is None else sde
    g: GaussianMixture = TARGETS[target]()
    exact = g.exact_score(sde)
    zero_snr = is_zero_terminal(sde)
    score = Score(exact.x0, sde, "x0") if zero_snr else Score(exact.eps, sde, "eps")
    return Problem(target, sde, score, g, (g.dim,))
