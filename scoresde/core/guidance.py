"""Classifier-free guidance (Ho & Salimans 2022) as a score combinator.

With a network trained with condition dropout, the unconditional prediction u = net(x, t, null)
and the conditional one c = net(x, t, cond) are combined as

    guided = u + w(t) (c - u)          (in the network's own parameterisation)

Every parameterisation here (eps, x0, v, score) is an affine function of the score at fixed
(x, t), and the weights (1 - w) and w sum to one, so combining raw predictions is the same as
combining scores: score_w = (1 - w) grad log p_t(x) + w grad log p_t(x | c). w = 1 is the
conditional model, w = 0 the unconditional one, w > 1 sharpens towards the condition.

Both halves come from ONE network call on the doubled batch [x; x] with the conditions
[null; cond], as diffusers' pipelines do. ``scale`` is a number or a guidance schedule: a
function of the (B,) time tensor returning a number or a (B,) tensor, e.g.
``guidance_interval(w, t_low, t_high)`` (Kynkäänniemi et al. 2024: guide only on a middle
interval of noise levels, plain conditional elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from scoresde.core.adapters import Score
from scoresde.core.checks import broadcast_time

GuidanceScale = float | Callable[[Tensor], Tensor | float]


class ClassifierFreeGuidance(Score):
    """``score`` guided with scale w(t): u + w (c - u) from one batched call.

    Args:
        score: the conditional model as a ``Score`` (its network takes the condition as
            keyword arguments).
        scale: w, a number or a function of the (B,) time tensor.
        uncondition: the null condition, one entry per condition key (e.g. the "no class"
            label, or the empty prompt's ``encoder_hidden_states``); each value is broadcast
            to the shape of the per-call condition (a 0-d label, or a (1, L, D) embedding).

    Give the per-call condition with ``with_condition(**cond)`` or ``sample(condition=...)``.
    """

    def __init__(self, score: Score, scale: GuidanceScale, uncondition: dict[str, Any]) -> None:
        if not isinstance(score, Score):
            raise TypeError("guidance wraps a scoresde Score (see scoresde.Score, from_diffusers)")
        if not isinstance(uncondition, dict) or not uncondition:
            raise ValueError("uncondition must be a non-empty dict: the null condition per key")
        if not callable(scale):
            value = float(scale)
            if value != value or abs(value) == float("inf"):
                raise ValueError(f"scale must be a finite number or a function of t, got {scale}")
        super().__init__(score.net, score.sde, score.prediction, score.time_label, score.min_std)
        self.condition = dict(score.condition)
        self.x0_correction = score.x0_correction
        self.scale, self.uncondition = scale, dict(uncondition)

    def _weight(self, t: Tensor, x: Tensor) -> Tensor:
        w = self.scale(t) if callable(self.scale) else self.scale
        w = torch.as_tensor(w, device=x.device, dtype=x.dtype)
        return broadcast_time(w, x)

    def _net(self, x: Tensor, t: Tensor) -> Tensor:
        if not self.condition:
            raise ValueError(
                "classifier-free guidance needs a condition: use with_condition(...) or "
                "sample(..., condition={...})"
            )
        both: dict[str, Any] = {}
        for key, cond in self.condition.items():
            if key not in self.uncondition:
                raise ValueError(f"uncondition has no entry for the condition {key!r}")
            null = self.uncondition[key]
            if isinstance(cond, Tensor):
                null = torch.as_tensor(null, device=cond.device, dtype=cond.dtype)
                both[key] = torch.cat([torch.broadcast_to(null, cond.shape), cond])
            else:
                both[key] = cond
        label = self.time_label(t)
        label = torch.cat([label, label]) if label.dim() >= 1 else label
        out = self._call_net(torch.cat([x, x]), label, both)
        uncond, cond = out.chunk(2)
        return torch.lerp(uncond, cond, self._weight(t, x))


def guidance_interval(scale: float, t_low: float, t_high: float) -> Callable[[Tensor], Tensor]:
    """w(t) = scale for t_low <= t <= t_high, else 1 (the plain conditional model)."""
    if not 0.0 <= t_low < t_high:
        raise ValueError(f"need 0 <= t_low < t_high, got t_low = {t_low}, t_high = {t_high}")
    scale = float(scale)

    def weight(t: Tensor) -> Tensor:
        inside = (t >= t_low) & (t <= t_high)
        return torch.where(inside, torch.full_like(t, scale), torch.ones_like(t))

    return weight
