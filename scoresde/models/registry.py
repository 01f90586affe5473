"""Models by name: ``load_model(ref)`` for a built-in name or ``module:callable``.

Built-in models are entries of ``BUILTIN_MODELS``, each resolved like ``module:callable``
(``digits``: the package's own eps-network on scikit-learn's 8x8 digits, with data-side
metrics for ``compare`` and a likelihood report). Generic code never imports a built-in model.
``module`` is a dotted name on sys.path or a path to a .py file; the callable is called with
no arguments and returns a ``ModelSpec`` or the dict of ``scoresde.models.spec``'s protocol.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from scoresde.models.spec import ModelSpec, spec_from

# built-in models by name, each resolved like ``module:callable`` (generic code never
# imports a built-in model; the name is only looked up here)
BUILTIN_MODELS: dict[str, str] = {"digits": "scoresde.digits:build"}


def _import(module: str):
    if module.endswith(".py") or "/" in module:
        path = Path(module)
        if not path.is_file():
            raise ValueError(f"model: no such file {module}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = mod
        spec.loader.exec_module(mod)
        return mod
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"model: cannot import module {module!r} ({e})") from None


def load_model(ref: str) -> ModelSpec:
    """Build the ``ModelSpec`` for a built-in name (``BUILTIN_MODELS``) or
    ``module:callable``, and check the network's output shape."""
    if not isinstance(ref, str):
        raise TypeError(f"model must be a name or 'module:callable', got {type(ref).__name__}")
    target = BUILTIN_MODELS.get(ref, ref)
    if ":" not in target:
        raise ValueError(
            f"model must be a built-in model ({', '.join(BUILTIN_MODELS)}) or "
            f"module:callable, got {ref!r}"
        )
    module, _, name = target.rpartition(":")
    factory = getattr(_import(module), name, None)
    if not callable(factory):
        raise ValueError(f"model: {module} has no callable named {name!r}")
    return spec_from(factory())
