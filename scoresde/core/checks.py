"""Argument checks shared by the public API.

Every check raises ``ValueError`` (or ``TypeError``) with a message that names the argument and
the allowed range, so a user can fix the call without reading the source. These run on
arguments at set-up time, never inside a sampling loop.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

MAX_STEPS = 10**6  # a grid and its per-step time rows are built up front: bound the memory


def check_positive_int(
    name: str, value: object, minimum: int = 1, maximum: int | None = None
) -> int:
    """Return ``value`` as an int, or raise if it is not an integer in [minimum, maximum]."""
    allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum:,}]"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer {allowed}, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an integer {allowed}, got {value}")
    return value


def as_float(name: str, value: object) -> float:
    """``float(value)``, or a TypeError naming the argument."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None


def check_seed(name: str, value: object) -> int:
    """An integer seed in [0, 2^63), or an error naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer in [0, 2^63), got {value!r}")
    if not 0 <= value < 2**63:
        raise ValueError(f"{name} must be an integer in [0, 2^63), got {value}")
    return value


def check_device(name: str, value: object) -> torch.device:
    """A torch.device that can hold samples here (cpu, or cuda when CUDA is available)."""
    try:
        device = torch.device(value)  # type: ignore[arg-type]
    except (TypeError, RuntimeError, OverflowError, ValueError):
        raise ValueError(
            f"{name} must be a device such as 'cpu' or 'cuda:0', got {value!r}"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name} is {value!r} but CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps", "xpu"):
        raise ValueError(f"{name} must be a compute device (cpu, cuda, ...), got {value!r}")
    return device


def check_generator(name: str, value: object) -> torch.Generator | None:
    """``value`` if it is a ``torch.Generator`` or None; a seed is refused with the fix."""
    if value is None or isinstance(value, torch.Generator):
        return value
    hint = f"torch.Generator().manual_seed({value})" if isinstance(value, int) else "one"
    raise TypeError(
        f"{name} must be a torch.Generator (randomness comes only from the caller's generator),"
        f" got {type(value).__name__} {value!r:.40}: pass {hint}"
    )


def check_sampling_dtype(dtype: torch.dtype, name: str = "dtype") -> torch.dtype:
    """float32 or float64: half precision is too coarse for a sampling or ODE state."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating dtype, got {dtype}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"{name} {dtype} is too coarse for the sampling state (steps change x by less than "
            "its resolution); use float32 or float64 — the network itself may run in half "
            "precision, its output is cast to the state's dtype"
        )
    return dtype


def check_output(out: object, x: Tensor, what: str) -> Tensor:
    """``out`` as a tensor of x's shape, device and dtype, or a one-line error naming ``what``."""
    if not isinstance(out, Tensor):
        raise TypeError(f"the {what} function must return a tensor, got {type(out).__name__}")
    if out.shape != x.shape:
        raise ValueError(
            f"the {what} function returned shape {tuple(out.shape)} for x of shape "
            f"{tuple(x.shape)}; it must return a tensor of x's shape"
        )
    if out.device != x.device:
        raise ValueError(
            f"the {what} function returned a tensor on {out.device}, x is on {x.device}"
        )
    if out.dtype != x.dtype:
        if not out.dtype.is_floating_point:
            raise TypeError(f"the {what} function returned dtype {out.dtype}; it must be floating")
        out = out.to(x.dtype)
    return out


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
