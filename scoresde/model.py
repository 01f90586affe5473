"""Loading a user's network for ``scoresde compare --model`` (and later ``generate``).

Built-in: ``--model digits`` is the package's own trained model (``scoresde.digits``): an
eps-network on scikit-learn's 8x8 digits, with data-side metrics for ``compare``.

Protocol: ``--model module:callable`` imports ``module`` (a dotted name on sys.path, or a path
to a .py file) and calls ``callable()`` with no arguments. It returns a dict with

    net          callable net(x, label) -> tensor of x's shape (required)
    shape        the shape of one sample, e.g. (3, 32, 32) (required)
    prediction   "eps" (default), "x0", "v" or "score": what the network predicts
    schedule     a NoiseSchedule (default LinearSchedule()); or give ``sde`` directly
    time_label   how t maps to the network's time input: a function t -> label such as
                 scoresde.discrete_index(1000) or scoresde.scaled_time(999)
                 (default: the network takes t in [0, 1])
    evaluator    optional: an object scoring samples against data, with ``metrics`` (names),
                 ``two_sided`` (names tested both ways), ``__call__(xs)`` for xs (R, n, ...)
                 returning {name: R values} and ``floor(n, R)`` returning the same for real
                 data; ``compare`` adds its metrics (see scoresde.digits.evaluation)
    compare_defaults  optional: compare's settings for this model where the caller gives none
                 (nfe, samples, replicates, reference, sde_reference)
    condition    optional: a function of the sample indices (an int64 (B,) tensor) returning
                 the network's keyword arguments for those samples, e.g.
                 lambda i: {"class_labels": i % 10}; ``generate`` keys it by the global sample
                 index (so samples do not depend on the batch size), ``compare`` by the index
                 within each replicate

The callable may instead return a ``ModelSpec`` (``scoresde.interop.from_diffusers`` and
``from_k_diffusion`` build one); set its ``condition`` field for conditional models.

See examples/user_model.py.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from scoresde.adapters import Score, bind_condition
from scoresde.schedules import LinearSchedule, NoiseSchedule
from scoresde.sde import SDE, VPSDE

ConditionFn = Callable[[torch.Tensor], dict[str, Any]]


@dataclass
class ModelSpec:
    """A model ready to sample: its score, SDE, the shape of one sample and, optionally, a
    data-side evaluator, compare defaults and per-sample conditioning (see the module doc)."""

    score: Score
    sde: SDE
    shape: tuple[int, ...]
    evaluator: Any = None
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


def _digits() -> dict[str, Any]:
    from scoresde.digits import build

    return build()


BUILTIN_MODELS: dict[str, Callable[[], dict[str, Any]]] = {"digits": _digits}


def _import(module: str):
    if module.endswith(".py") or "/" in module:
        path = Path(module)
        if not path.is_file():
            raise ValueError(f"--model: no such file {module}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = mod
        spec.loader.exec_module(mod)
        return mod
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"--model: cannot import module {module!r} ({e})") from None


def load_model(ref: str) -> ModelSpec:
    """Build the ``ModelSpec`` for a built-in name (``digits``) or ``module:callable``, and
    check the network's output shape."""
    if isinstance(ref, str) and ref in BUILTIN_MODELS:
        factory = BUILTIN_MODELS[ref]
    else:
        if not isinstance(ref, str) or ":" not in ref:
            raise ValueError(
                f"--model must be a built-in model ({', '.join(BUILTIN_MODELS)}) or "
                f"module:callable, got {ref!r}"
            )
        module, _, name = ref.rpartition(":")
        mod = _import(module)
        factory = getattr(mod, name, None)
        if not callable(factory):
            raise ValueError(f"--model: {module} has no callable named {name!r}")
    spec = factory()
    if isinstance(spec, ModelSpec):
        return _checked(spec)
    if not isinstance(spec, dict) or "net" not in spec or "shape" not in spec:
        raise ValueError("--model: the callable must return a dict with at least 'net' and 'shape'")
    shape = tuple(int(n) for n in spec["shape"])
    sde = spec.get("sde")
    if sde is None:
        schedule = spec.get("schedule", LinearSchedule())
        if not isinstance(schedule, NoiseSchedule):
            raise ValueError("--model: 'schedule' must be a scoresde NoiseSchedule")
        sde = VPSDE(schedule)
    score = Score(spec["net"], sde, spec.get("prediction", "eps"), spec.get("time_label"))
    condition = spec.get("condition")
    if condition is not None and not callable(condition):
        raise ValueError("--model: 'condition' must be a function of the sample indices")
    defaults = dict(spec.get("compare_defaults", {}))
    return _checked(ModelSpec(score, sde, shape, spec.get("evaluator"), defaults, condition))


def _checked(spec: ModelSpec) -> ModelSpec:
    """Check the compare defaults and the network's output shape on a probe batch."""
    spec.shape = tuple(int(n) for n in spec.shape)
    unknown = set(spec.compare_defaults) - set(COMPARE_DEFAULT_KEYS)
    if unknown:
        raise ValueError(
            f"--model: unknown compare_defaults {sorted(unknown)}; known: {COMPARE_DEFAULT_KEYS}"
        )
    probe = torch.zeros(2, *spec.shape)
    try:
        with torch.no_grad():
            spec.probe_score(probe, torch.full((2,), 0.5))
    except ValueError as e:
        raise ValueError(f"--model: {e}") from None
    return spec


COMPARE_DEFAULT_KEYS = ("nfe", "samples", "replicates", "reference", "sde_reference")
