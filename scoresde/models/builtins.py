"""The names of the package's built-in models (model directories shipped as package data),
training data and evaluators (each resolved like ``module:callable`` of this package).
Generic code never imports them; the names are only looked up here, and a model directory's
model.json names its evaluator, so loading it runs only the package's own code."""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import sys
from pathlib import Path
from typing import Any

# the shipped trained models, each a model directory of the package (name -> package:folder):
# the digits model (scoresde/digits/model) and the schedule study's five (docs/schedules.md)
BUILTIN_MODELS: dict[str, str] = {
    "digits": "scoresde.digits:model",
    **{
        f"digits-{name}": f"scoresde.digits:study/{name}"
        for name in ("ddpm-linear", "ddpm-cosine", "edm", "vp-linear-likelihood", "rectified-flow")
    },
}
BUILTIN_DATA: dict[str, str] = {"digits": "scoresde.digits:training_data"}
BUILTIN_EVALUATORS: dict[str, str] = {"digits": "scoresde.digits:evaluator"}


def import_module(module: str):
    """A dotted module name on sys.path, or a path to a .py file."""
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


def resolve(target: str, what: str = "model") -> Any:
    """The callable named by ``module:callable``."""
    module, _, name = target.rpartition(":")
    factory = getattr(import_module(module), name, None)
    if not callable(factory):
        raise ValueError(f"{what}: {module} has no callable named {name!r}")
    return factory


def builtin_model_dir(name: str) -> Path:
    """The folder of the shipped model ``name`` (``BUILTIN_MODELS``)."""
    package, _, folder = BUILTIN_MODELS[name].partition(":")
    return Path(str(importlib.resources.files(package) / folder))


def builtin(table: dict[str, str], name: str, what: str) -> Any:
    """Call the built-in ``name`` of ``table`` (BUILTIN_DATA, BUILTIN_EVALUATORS)."""
    if name not in table:
        raise ValueError(f"{what} must be one of {', '.join(table)}, got {name!r}")
    return resolve(table[name], what)()
