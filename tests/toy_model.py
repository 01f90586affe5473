"""Tiny deterministic models for tests.

``build`` and ``build_trainable`` (generation tests; optionally slow, for kill/resume) are
close to the exact eps-prediction for data at a single point x0 = 0, eps(x, t) = x / s(t),
plus a small nonlinear term, so ``scoresde.check_model`` passes them. ``gaussian_model`` is
Gaussian data with its exact score (grid tuning's tests).
"""

import os
import time

import torch

import scoresde as sd
from scoresde.evaluation.targets import GaussianMixture
from scoresde.models import ModelSpec

SDE = sd.VPSDE(sd.LinearSchedule())


def _std(t, x):
    return SDE.marginal(t)[1].to(x.dtype).view(-1, *[1] * (x.dim() - 1))


def build():
    delay = float(os.environ.get("SCORESDE_TOY_DELAY", "0"))

    def eps(x, t):
        if delay:
            time.sleep(delay)
        return x / _std(t, x) + 0.1 * torch.tanh(x) * t.view(-1, 1, 1)

    return {"net": eps, "shape": (2, 3), "schedule": sd.LinearSchedule()}


class TrainableEps(torch.nn.Module):
    """A small eps-network whose parameters require grad (as after ``from_pretrained``)."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(channels + 1, 16, 3, padding=1)
        self.out = torch.nn.Conv2d(16, channels, 3, padding=1)

    def forward(self, x, t):
        tt = t.to(x.dtype).view(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[2:])
        return x / _std(t, x) + 0.1 * self.out(torch.tanh(self.conv(torch.cat([x, tt], 1))))


def build_trainable():
    return {"net": TrainableEps(), "shape": (3, 6, 6), "schedule": sd.LinearSchedule()}


def gaussian_model(sde):
    """Gaussian data N(mu, diag v) under ``sde`` with its exact eps: its probability-flow ODE
    is solved in closed form, so a tuning teacher is exact up to dopri5's tolerance."""
    data = GaussianMixture([1.0], [[0.5, -0.3]], [[0.3, 1.5]])
    return ModelSpec(sd.Score(data.exact_score(sde).eps, sde, "eps"), sde, (2,))
