"""Loading a user's network for ``scoresde compare --model`` (and later ``generate``).

Protocol: ``--model module:callable`` imports ``module`` (a dotted name on sys.path, or a path
to a .py file) and calls ``callable()`` with no arguments. It returns a dict with

    net          callable net(x, label) -> tensor of x's shape (required)
    shape        the shape of one sample, e.g. (3, 32, 32) (required)
    prediction   "eps" (default), "x0", "v" or "score": what the network predicts
    schedule     a NoiseSchedule (default LinearSchedule()); or give ``sde`` directly
    time_label   how t maps to the network's time input: a function t -> label such as
                 scoresde.discrete_index(1000) or scoresde.scaled_time(999)
                 (default: the network takes t in [0, 1])

See examples/user_model.py.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from scoresde.adapters import Score
from scoresde.schedules import LinearSchedule, NoiseSchedule
from scoresde.sde import SDE, VPSDE


@dataclass
class ModelSpec:
    score: Score
    sde: SDE
    shape: tuple[int, ...]


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
    """Build the ``ModelSpec`` for ``module:callable`` and check the network's output shape."""
    if not isinstance(ref, str) or ":" not in ref:
        raise ValueError(f"--model must look like module:callable, got {ref!r}")
    module, _, name = ref.rpartition(":")
    mod = _import(module)
    factory = getattr(mod, name, None)
    if not callable(factory):
        raise ValueError(f"--model: {module} has no callable named {name!r}")
    spec = factory()
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
    probe = torch.zeros(2, *shape)
    try:
        score(probe, torch.full((2,), 0.5))
    except ValueError as e:
        raise ValueError(f"--model: {e}") from None
    return ModelSpec(score=score, sde=sde, shape=shape)
