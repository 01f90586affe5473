"""Argument checks shared by the public API.

Every check raises ``ValueError`` (or ``TypeError``) with a message that names the argument and
the allowed range, so a user can fix the call without reading the source. These run on
arguments at set-up time, never inside a sampling loop.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def check_finite_positive(name: str, value: float) -> float:
    """Return ``value`` as a float, or raise unless it is finite and > 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return v


def check_times(name: str, t: Tensor, low: float, high: float, *, include_low: bool) -> None:
    """Raise if any entry of ``t`` lies outside [low, high] (or (low, high] without low).

    Meant for set-up time (schedule tables, grids, user calls outside a loop): it reads the
    tensor on the host.
    """
    if not torch.is_floating_point(t):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.numel() == 0:
        return
    bad = ~torch.isfinite(t) | (t > high) | ((t < low) if include_low else (t <= low))
    if bool(bad.any()):
        first = t[bad].flatten()[0].item()
        bracket = "[" if include_low else "("
        raise ValueError(f"{name} must lie in {bracket}{low:g}, {high:g}], got {first!r}")


def as_time_tensor(t: Tensor | float, like: Tensor | None = None) -> Tensor:
    """Turn a float or tensor time into a floating tensor (on ``like``'s device and dtype)."""
    if isinstance(t, Tensor):
        if not torch.is_floating_point(t):
            t = t.to(torch.get_default_dtype() if like is None else like.dtype)
        return t
    if like is not None:
        return torch.tensor(float(t), device=like.device, dtype=like.dtype)
    return torch.tensor(float(t), dtype=torch.get_default_dtype())


def broadcast_time(t: Tensor, x: Tensor) -> Tensor:
    """Reshape a scalar or per-sample (B,) time-like tensor so it broadcasts against x (B, ...).

    A 0-d tensor is returned as is. A (B,) tensor becomes (B, 1, ..., 1) with as many trailing
    ones as x has non-batch dimensions; any other shape is a shape error.
    """
    if t.dim() == 0:
        return t
    if t.dim() == 1 and x.dim() >= 1 and t.shape[0] in (1, x.shape[0]):
        return t.reshape(t.shape[0], *([1] * (x.dim() - 1)))
    raise ValueError(
        f"t must be a scalar or have shape (B,) with B = x.shape[0] = "
        f"{x.shape[0] if x.dim() else 'n/a'}, got t.shape = {tuple(t.shape)}"
    )
