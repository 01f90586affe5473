"""The model protocol: ``ModelSpec`` and the dict a model's callable may return instead.

Built-in models are named in ``scoresde.models.registry.BUILTIN_MODELS``, each resolved like
``module:callable``.

Protocol: ``--model module:callable`` imports ``module`` (a dotted name on sys.path, or a path
to a .py file) and calls ``callable()`` with no arguments. It returns a dict with

    net          callable net(x, label) -> tensor of x's shape (required)
    shape        the shape of one sample, e.g. (3, 32, 32) (required)
    prediction   "eps" (default), "x0", "v" or "score": what the network predicts
    schedule     a NoiseSchedule (default LinearSchedule()); or give ``sde`` directly
    time_label   how t maps to the network's time input: a function t -> label such as
                 scoresde.discrete_index(1000) or scoresde.scaled_time(999)
                 (default: the network takes t in [0, 1])
    evaluator    optional: data-side metrics, their floors and how to show them
                 (``scoresde.models.evaluator.Evaluator``); ``compare`` adds its metrics, and a
                 ``likelihood_report`` method serves ``scoresde likelihood --model``
    compare_defaults  optional: compare's settings for this model where the caller gives none
                 (nfe, samples, replicates, reference, sde_reference)
    condition    optional: a function of the sample indices (an int64 (B,) tensor) returning
                 the network's keyword arguments for those samples, e.g.
                 lambda i: {"class_labels": i % 10}; ``generate`` keys it by the global sample
                 index (so samples do not depend on the batch size), ``compare`` by the index
                 within each replicate

The callable may instead return a ``ModelSpec`` (``scoresde.models.interop.from_diffusers`` and
``from_k_diffusion`` build one); set its ``condition`` field for conditional models.

See examples/user_model.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from scoresde.core.adapters import Score, bind_condition
from scoresde.core.schedules import LinearSchedule, NoiseSchedule
from scoresde.core.sde import SDE, VPSDE
from scoresde.models.evaluator import Evaluator, check_evaluator

ConditionFn = Callable[[torch.Tensor], dict[str, Any]]


@dataclass
class ModelSpec:
    """A model ready to sample: its score, SDE, the shape of one sample and, optionally, a
    data-side evaluator, compare defaults and per-sample conditioning (see the module doc)."""

    score: Score
    sde: SDE
    shape: tuple[int, ...]
    evaluator: Evaluator | None = None
    compare_defaults: dict[str, Any] = field(default_factory=dict)
    condition: ConditionFn | None = None

    def condition_for(self, indices: torch.Tensor) -> dict[str, Any] | None:
        """The network's keyword arguments for the samples ``indices`` (None if unconditional)."""
        if self.condition is None:
            return None
        kwargs = self.condition(indices)
        if not isinstance(kwargs, dict):
            raise TypeError(
                f"the model's condition function must return a dict, got {type(kwargs).__name__}"
            )
        return kwargs

    def probe_score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """score(x, t) for a probe batch, with the conditions of samples 0 .. B-1."""
        cond = self.condition_for(torch.arange(x.shape[0], device=x.device))
        score = bind_condition(self.score, cond, x.shape[0], x.device) if cond else self.score
        return score(x, t)


def spec_from(built: ModelSpec | dict[str, Any]) -> ModelSpec:
    """A checked ``ModelSpec`` from what a model's callable returns: a ``ModelSpec`` or the
    dict of the module doc's protocol."""
    if isinstance(built, ModelSpec):
        return _checked(built)
    if not isinstance(built, dict) or "net" not in built or "shape" not in built:
        raise ValueError("model: the callable must return a dict with at least 'net' and 'shape'")
    shape = tuple(int(n) for n in built["shape"])
    sde = built.get("sde")
    if sde is None:
        schedule = built.get("schedule", LinearSchedule())
        if not isinstance(schedule, NoiseSchedule):
            raise ValueError("model: 'schedule' must be a scoresde NoiseSchedule")
        sde = VPSDE(schedule)
    score = Score(built["net"], sde, built.get("prediction", "eps"), built.get("time_label"))
    condition = built.get("condition")
    if condition is not None and not callable(condition):
        raise ValueError("model: 'condition' must be a function of the sample indices")
    defaults = dict(built.get("compare_defaults", {}))
    evaluator = check_evaluator(built.get("evaluator"))
    return _checked(ModelSpec(score, sde, shape, evaluator, defaults, condition))


def _checked(spec: ModelSpec) -> ModelSpec:
    """Check the compare defaults, the evaluator and the network's output shape on a probe
    batch."""
    spec.shape = tuple(int(n) for n in spec.shape)
    spec.evaluator = check_evaluator(spec.evaluator)
    unknown = set(spec.compare_defaults) - set(COMPARE_DEFAULT_KEYS)
    if unknown:
        raise ValueError(
            f"model: unknown compare_defaults {sorted(unknown)}; known: {COMPARE_DEFAULT_KEYS}"
        )
    probe = torch.zeros(2, *spec.shape)
    try:
        with torch.no_grad():
            spec.probe_score(probe, torch.full((2,), 0.5))
    except ValueError as e:
        raise ValueError(f"model: {e}") from None
    return spec


COMPARE_DEFAULT_KEYS = ("nfe", "samples", "replicates", "reference", "sde_reference")
