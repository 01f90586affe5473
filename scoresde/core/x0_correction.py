"""Corrections of the x0 prediction for data known to lie in a box: clipping and dynamic
thresholding. Attach one with ``Score.with_x0_correction(fn)``; every solver then sees the
score implied by the corrected x0, score = (m fn(x0_hat) - x) / s^2, so the correction reaches
the exponential integrators that form x0 (DPM-Solver++'s ``correcting_x0_fn``), DDIM and
DDPM (diffusers' ``clip_sample``, with DDIM's ``use_clipped_model_output=True``) and the
SDE solvers alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

X0Correction = Callable[[Tensor], Tensor]


def clip_x0(low: float = -1.0, high: float = 1.0) -> X0Correction:
    """x0 -> clamp(x0, low, high) elementwise (diffusers' ``clip_sample``)."""
    low, high = float(low), float(high)
    if not low < high:
        raise ValueError(f"need low < high, got low = {low}, high = {high}")

    def clip(x0: Tensor) -> Tensor:
        return x0.clamp(low, high)

    return clip


def dynamic_threshold(ratio: float = 0.995, max_value: float = math.inf) -> X0Correction:
    """Imagen's dynamic thresholding (Saharia et al. 2022, sec. 2.3), per sample.

    s = the ``ratio`` quantile of |x0| over the sample's elements, clamped to [1, max_value];
    x0 -> clamp(x0, -s, s) / s. ``max_value`` = inf is Imagen's rule; diffusers' schedulers
    clamp s at their ``sample_max_value`` (default 1, which makes it plain clipping to [-1, 1]).
    The quantile is taken in float32 at least (torch has no half-precision quantile).
    """
    ratio = float(ratio)
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must lie in (0, 1], got {ratio}")
    if not max_value >= 1.0:
        raise ValueError(f"max_value must be >= 1, got {max_value}")

    def threshold(x0: Tensor) -> Tensor:
        flat = x0.reshape(x0.shape[0], -1)
        work = flat if flat.dtype in (torch.float32, torch.float64) else flat.float()
        s = torch.quantile(work.abs(), ratio, dim=1).clamp(1.0, max_value).to(x0.dtype)
        s = s.view(-1, *([1] * (x0.dim() - 1)))
        return torch.maximum(torch.minimum(x0, s), -s) / s

    return threshold
