"""A tiny deterministic eps-model for generation tests (optionally slow, for kill/resume)."""

import os
import time

import torch

import scoresde as sd


def build():
    delay = float(os.environ.get("SCORESDE_TOY_DELAY", "0"))

    def eps(x, t):
        if delay:
            time.sleep(delay)
        return torch.tanh(x) * t.view(-1, 1, 1) + 0.1 * x

    return {"net": eps, "shape": (2, 3), "schedule": sd.LinearSchedule()}
