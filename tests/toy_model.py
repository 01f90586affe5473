"""Tiny deterministic eps-models for generation tests (optionally slow, for kill/resume).

Both are close to the exact eps-prediction for data at a single point x0 = 0,
eps(x, t) = x / s(t), plus a small nonlinear term, so ``scoresde.check_model`` passes them.
"""

import os
import time

import torch

import scoresde as sd

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
