"""The built-in ``digits`` model: an eps-prediction U-Net trained on scikit-learn's 8x8 digits.

``scoresde compare --model digits``, ``scoresde generate --model digits`` and
``scoresde likelihood --model digits`` use it with no other input. In code::

    spec = scoresde.load_model("digits")   # the ModelSpec: score, SDE, shape, evaluator
    from scoresde import digits
    net = digits.load_unet()                # the shipped (EMA) network
    info = digits.metadata()                # the trainer's record: settings, split, losses

The U-Net is a model directory written by the trainer (``model/``: model.safetensors and
model.json with the weights' SHA-256); ``weights/`` holds the classifier behind the data-side
metrics, with its own record. Both are reproduced by ``python -m scoresde.digits.train``
(``scoresde.digits.train``). Data, split and the dequantisation of the 17 grey levels are
described in ``scoresde.digits.data``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from scoresde.digits.classifier import DigitClassifier
from scoresde.digits.data import (
    BIN_WIDTH,
    LEVELS,
    SHAPE,
    dequantized,
    levels_to_model,
    load_split,
    split_indices,
)
from scoresde.models.directory import check_sha256, load_network, read_model_json

MODEL_DIR = Path(__file__).parent / "model"
WEIGHTS_DIR = Path(__file__).parent / "weights"
CLASSIFIER_FILE = "classifier.safetensors"
CLASSIFIER_RECORD = "classifier.json"
# compare's defaults for models trained on digits: sized so that the fifteen default solvers
# run in under three minutes on 2 CPU cores (one network call on 640 digits takes about 20 ms)
COMPARE_DEFAULTS: dict[str, Any] = {
    "nfe": (10, 20, 50, 100),
    "samples": 128,
    "replicates": 5,
    "reference": ("ode_heun", 500),
    "sde_reference": ("euler_maruyama", 1000),
}


@lru_cache(maxsize=1)
def metadata() -> dict[str, Any]:
    """The shipped U-Net's model.json: the trainer's settings and command, the split, the loss
    curve, the held-out loss, the seconds it took and the weights' SHA-256."""
    return read_model_json(MODEL_DIR)


@lru_cache(maxsize=1)
def classifier_metadata() -> dict[str, Any]:
    """The shipped classifier's record: settings, test accuracy, seconds and SHA-256."""
    return json.loads((WEIGHTS_DIR / CLASSIFIER_RECORD).read_text())


def load_unet(device: str | torch.device = "cpu") -> torch.nn.Module:
    """The shipped eps-network (``SmallUNet``) in eval mode with frozen parameters (gradients
    still flow to its input, which the likelihood's divergence needs); called as
    net(x, label) with label = 1000 t, the DDPM timestep."""
    return load_network(MODEL_DIR, device)


def load_classifier(device: str | torch.device = "cpu") -> DigitClassifier:
    """The shipped digit classifier (test accuracy in ``classifier_metadata()``), its weights
    checked against the record's SHA-256."""
    path = WEIGHTS_DIR / CLASSIFIER_FILE
    check_sha256(path, classifier_metadata()["sha256"], CLASSIFIER_RECORD)
    with torch.device("meta"):  # no initial weights drawn (the global RNG stays untouched)
        model = DigitClassifier()
    model.load_state_dict(load_file(path), assign=True)
    return model.to(device).eval().requires_grad_(False)


def evaluator():
    """The data-side evaluator of models trained on digits (FD, label balance, ...) with the
    shipped classifier; named "digits" in a model directory's model.json."""
    from scoresde.digits.evaluation import DigitsEvaluator

    return DigitsEvaluator(load_classifier())


def training_data():
    """The fixed split as the trainer's data (``--data digits``): integer levels, dequantised
    afresh in every batch, the digits evaluator and compare's defaults."""
    from scoresde.training.data import TrainingData

    train, test = split_indices()
    return TrainingData(
        train=load_split("train").levels,
        test=load_split("test").levels,
        shape=SHAPE,
        transform=dequantized,
        split={
            "source": "sklearn.datasets.load_digits (1797 images, 8x8, levels 0..16)",
            "split": "train_test_split(test_size=0.25, stratify=target, random_state=0)",
            "train_size": int(train.size),
            "test_indices": test.tolist(),
            "model_space": "x = -1 + (k + u) 2/17, u ~ U[0, 1) afresh in every batch",
        },
        source="digits",
        evaluator="digits",
        data_range=(-1.0, 1.0),
        compare_defaults=COMPARE_DEFAULTS,
    )


__all__ = [
    "BIN_WIDTH",
    "CLASSIFIER_FILE",
    "CLASSIFIER_RECORD",
    "COMPARE_DEFAULTS",
    "LEVELS",
    "MODEL_DIR",
    "SHAPE",
    "WEIGHTS_DIR",
    "DigitClassifier",
    "classifier_metadata",
    "evaluator",
    "levels_to_model",
    "load_classifier",
    "load_split",
    "load_unet",
    "metadata",
    "training_data",
]
