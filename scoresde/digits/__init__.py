"""The built-in ``digits`` model: an eps-prediction U-Net trained on scikit-learn's 8x8 digits.

``scoresde compare --model digits``, ``scoresde generate --model digits`` and
``scoresde likelihood --model digits`` use it with no other input. In code::

    from scoresde import digits
    spec = digits.build()              # the model dict of scoresde.models's protocol
    net = digits.load_unet()           # DigitsUNet with the shipped (EMA) weights
    info = digits.metadata()           # training settings, split, final loss, checksums

The weights (``weights/unet.pt``, ``weights/classifier.pt``) ship inside the package with
``weights/model.json``; loading checks each file's SHA-256 against it. They are reproduced by
``python -m scoresde.digits.train`` (see ``scoresde.digits.train``). Data, split and the
dequantisation of the 17 grey levels are described in ``scoresde.digits.data``.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from scoresde.core.adapters import scaled_time
from scoresde.core.schedules import DiscreteSchedule
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
from scoresde.models.unet import SmallUNet as DigitsUNet

WEIGHTS_DIR = Path(__file__).parent / "weights"
# compare's defaults for this model: sized so that the fifteen default solvers run in under
# three minutes on 2 CPU cores (one network call on 640 digits takes about 20 ms there)
COMPARE_DEFAULTS: dict[str, Any] = {
    "nfe": (10, 20, 50, 100),
    "samples": 128,
    "replicates": 5,
    "reference": ("ode_heun", 500),
    "sde_reference": ("euler_maruyama", 1000),
}


@lru_cache(maxsize=1)
def metadata() -> dict[str, Any]:
    """The shipped ``model.json``: training settings, split, final loss, timings, checksums."""
    return json.loads((WEIGHTS_DIR / "model.json").read_text())


def _load_state(name: str) -> dict[str, torch.Tensor]:
    path = WEIGHTS_DIR / name
    expected = metadata()["sha256"][name]
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise ValueError(f"{path}: SHA-256 {actual} differs from model.json's {expected}")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_unet(device: str | torch.device = "cpu") -> DigitsUNet:
    """The shipped eps-network in eval mode with frozen parameters (gradients still flow to
    its input, which the likelihood's divergence needs). Channels-last weights: about 15 %
    faster on CPU for these 8x8 convolutions, same values."""
    with torch.device("meta"):  # no initial weights drawn (the global RNG stays untouched)
        net = DigitsUNet(width=metadata()["unet"]["width"])
    net.load_state_dict(_load_state("unet.pt"), assign=True)
    net = net.to(device, memory_format=torch.channels_last)
    return net.eval().requires_grad_(False)


def load_classifier(device: str | torch.device = "cpu") -> DigitClassifier:
    """The shipped digit classifier (test accuracy in ``metadata()["classifier"]``)."""
    with torch.device("meta"):
        model = DigitClassifier()
    model.load_state_dict(_load_state("classifier.pt"), assign=True)
    return model.to(device).eval().requires_grad_(False)


def schedule() -> DiscreteSchedule:
    """The table the network was trained on: DDPM linear, N = 1000, beta 1e-4 .. 0.02."""
    return DiscreteSchedule.linear(metadata()["schedule"]["num_timesteps"])


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


def build() -> dict[str, Any]:
    """The model dict of ``scoresde.models``'s protocol, plus the data-side evaluator and
    compare's defaults for this model."""
    n = metadata()["schedule"]["num_timesteps"]
    return {
        "net": load_unet(),
        "shape": SHAPE,
        "prediction": "eps",
        "schedule": schedule(),
        "time_label": scaled_time(n),  # label = N t: timestep i at t = i/N, float in between
        "evaluator": evaluator(),
        "compare_defaults": COMPARE_DEFAULTS,
    }


__all__ = [
    "BIN_WIDTH",
    "COMPARE_DEFAULTS",
    "LEVELS",
    "SHAPE",
    "WEIGHTS_DIR",
    "DigitClassifier",
    "DigitsUNet",
    "build",
    "evaluator",
    "levels_to_model",
    "load_classifier",
    "load_split",
    "load_unet",
    "metadata",
    "schedule",
    "training_data",
]
