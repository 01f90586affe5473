"""Models: the protocol (``ModelSpec``), the registry of built-in models (``load_model``),
the data-side ``Evaluator`` protocol, ``check_model`` and diffusers / k-diffusion interop."""

from scoresde.models.check import ModelCheck, ModelCheckWarning, check_model
from scoresde.models.evaluator import Evaluator, EvaluatorPresentation
from scoresde.models.registry import BUILTIN_MODELS, load_model
from scoresde.models.spec import COMPARE_DEFAULT_KEYS, ModelSpec, spec_from

__all__ = [
    "BUILTIN_MODELS",
    "COMPARE_DEFAULT_KEYS",
    "Evaluator",
    "EvaluatorPresentation",
    "ModelCheck",
    "ModelCheckWarning",
    "ModelSpec",
    "check_model",
    "load_model",
    "spec_from",
]
