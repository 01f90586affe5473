"""Models by name: ``load_model(ref)`` for a built-in name, a trained model's directory or
``module:callable``.

Built-in models are entries of ``BUILTIN_MODELS`` (``scoresde.models.builtins``): model
directories shipped inside the package. Generic code never imports a built-in model. A
directory with a model.json is read as data only (``scoresde.models.directory``).
``module`` is a dotted name on sys.path or a path to a .py file; the callable is called with
no arguments and returns a ``ModelSpec`` or the dict of ``scoresde.models.spec``'s protocol.
"""

from __future__ import annotations

from pathlib import Path

from scoresde.models.builtins import BUILTIN_MODELS, builtin_model_dir, resolve
from scoresde.models.directory import MODEL_FILE, load_model_dir
from scoresde.models.spec import ModelSpec, spec_from


def load_model(ref: str) -> ModelSpec:
    """Build the ``ModelSpec`` for a built-in name (``BUILTIN_MODELS``), a model directory
    written by the trainer (``scoresde.models.directory``) or ``module:callable``, and check
    the network's output shape."""
    if not isinstance(ref, str):
        raise TypeError(f"model must be a name or 'module:callable', got {type(ref).__name__}")
    if ref in BUILTIN_MODELS:
        return load_model_dir(builtin_model_dir(ref))
    if (Path(ref) / MODEL_FILE).is_file():
        return load_model_dir(ref)
    if ":" not in ref:
        names = ", ".join(BUILTIN_MODELS)
        raise ValueError(
            f"model must be a built-in model ({names}), a model "
            f"directory (with {MODEL_FILE}) or module:callable, got {ref!r}"
        )
    return spec_from(resolve(ref)())
