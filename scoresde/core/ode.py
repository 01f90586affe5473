"""A torch-native adaptive ODE solver: Dormand–Prince 5(4) with a PI step-size controller.

Used by the likelihood computation, ``encode``/``decode`` and the ``ode_dopri5`` sampler. The
state is a tuple of tensors (for the likelihood: the sample and the accumulated divergence);
all arithmetic stays on their device. The only host reads are one scalar per attempted step
(the error norm, to accept or reject) and three at start-up (the initial step size).

Method (Dormand & Prince 1980; Hairer, Nørsett & Wanner, *Solving ODEs I*, II.4 and II.5):
seven stages, the fifth-order solution is propagated (local extrapolation), the embedded
fourth-order solution only estimates the error, and the last stage is the derivative at the
new point, reused as the first stage of the next step (FSAL): six evaluations per step.

Error norm: for each state tensor, the root mean square over all its elements of
err / (atol + rtol * max(|y|, |y_new|)); the step's norm is the largest of these. The batch
shares one step size, so one hard sample slows the batch rather than being integrated loosely.

Accept/reject rule: a step is accepted when its norm is <= 1. The next step size is
h * clip(safety * err^(-0.7/5) * err_prev^(0.4/5), min_factor, max_factor) (Gustafsson's PI
controller with Hairer's exponents; err_prev is the norm of the previous accepted step,
floored at 1e-4). After a rejection the step shrinks by clip(safety * err^(-1/5),
min_factor, 1) and the next accepted step may not grow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction as F

import numpy as np
import scipy.integrate
import torch
from torch import Tensor

from scoresde.core.checks import check_finite_positive, check_positive_int

State = tuple[Tensor, ...]
ODEFunc = Callable[[float, State], State]

# Dormand–Prince tableau: C nodes, A stage weights, B5 the propagated solution (= the last row
# of A, which is what makes FSAL work), B4 the embedded fourth-order solution.
_C = [F(0), F(1, 5), F(3, 10), F(4, 5), F(8, 9), F(1), F(1)]
_A = [
    [],
    [F(1, 5)],
    [F(3, 40), F(9, 40)],
    [F(44, 45), F(-56, 15), F(32, 9)],
    [F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)],
    [F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)],
    [F(35, 384), F(0), F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84)],
]
_B5 = [*_A[6], F(0)]
_B4 = [F(5179, 57600), F(0), F(7571, 16695), F(393, 640), F(-92097, 339200), F(187, 2100), F(1, 40)]
C = [float(c) for c in _C]
A = [[float(a) for a in row] for row in _A]
B5 = [float(b) for b in _B5]
E = [float(b5 - b4) for b5, b4 in zip(_B5, _B4, strict=True)]  # error weights


@dataclass
class ODEResult:
    """The state at t1 and what it cost.

    nfe: right-hand-side evaluations (6 per attempted step + 1 at start + 1 for the initial
    step size).  accepted / rejected: step counts.  step_sizes: |h| of each accepted step.
    """

    y: State
    nfe: int
    accepted: int
    rejected: int
    step_sizes: list[float] = field(default_factory=list)

    @property
    def stats(self) -> dict[str, float | int]:
        sizes = self.step_sizes or [float("nan")]
        return {
            "nfe": self.nfe,
            "accepted_steps": self.accepted,
            "rejected_steps": self.rejected,
            "min_step": min(sizes),
            "max_step": max(sizes),
        }


def _combine(y: State, h: float, ks: Sequence[State], weights: Sequence[float]) -> State:
    """y + h * sum_i w_i k_i for each state tensor, skipping zero weights."""
    out = []
    for j, yj in enumerate(y):
        acc = yj.clone()
        for w, k in zip(weights, ks, strict=False):
            if w != 0.0:
                acc.add_(k[j], alpha=h * w)
        out.append(acc)
    return tuple(out)


def _error_norm(err: State, y0: State, y1: State, rtol: float, atol: float) -> Tensor:
    """max over state tensors of RMS(err / (atol + rtol max(|y0|, |y1|))), a 0-d tensor."""
    norms = [
        (e / (atol + rtol * torch.maximum(a.abs(), b.abs()))).pow(2).mean().sqrt()
        for e, a, b in zip(err, y0, y1, strict=True)
    ]
    return torch.stack([n.to(torch.float64) for n in norms]).max()


def _rms(y: State, scale: State) -> float:
    return max(float((a / s).pow(2).mean().sqrt()) for a, s in zip(y, scale, strict=True))


def _initial_step(
    func: ODEFunc,
    t0: float,
    y0: State,
    f0: State,
    direction: float,
    rtol: float,
    atol: float,
    t1: float,
) -> float:
    """Hairer, Nørsett & Wanner II.4: a first step from the sizes of y0, f0 and f's change.

    Both the probe step h0 and the result are capped at |t1 - t0|, so f is never evaluated
    outside the interval (a score is not defined beyond [0, T])."""
    span = abs(t1 - t0)
    scale = tuple(atol + rtol * y.abs() for y in y0)
    d0, d1 = _rms(y0, scale), _rms(f0, scale)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, span)
    y1 = tuple(y + direction * h0 * f for y, f in zip(y0, f0, strict=True))
    f1 = func(t1 if h0 == span else t0 + direction * h0, y1)
    d2 = _rms(tuple(b - a for a, b in zip(f0, f1, strict=True)), scale) / h0
    big = max(d1, d2)
    h1 = max(1e-6, h0 * 1e-3) if big <= 1e-15 else (0.01 / big) ** (1 / 5)
    h = min(100 * h0, h1, span)
    return h if math.isfinite(h) and h > 0 else min(1e-6, span)


def dopri5(
    func: ODEFunc,
    y0: State,
    t0: float,
    t1: float,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    first_step: float | None = None,
    safety: float = 0.9,
    min_factor: float = 0.2,
    max_factor: float = 10.0,
    max_steps: int = 100_000,
) -> ODEResult:
    """Integrate dy/dt = func(t, y) from t0 to t1 (either direction) with adaptive steps.

    Args:
        func: (t, y) -> dy/dt with t a Python float and y a tuple of tensors; returns a tuple
            of tensors of the same shapes.
        y0: the initial state, a tuple of tensors (any shapes, one device).
        rtol, atol: relative and absolute tolerance of the mixed error norm (module docstring).
        first_step: |h| of the first attempt; default chosen from y0 and func (one evaluation).
        safety, min_factor, max_factor: the controller's safety factor and step-change bounds.
        max_steps: attempted steps before giving up with an error.

    Returns an ``ODEResult``. Raises ``FloatingPointError`` if the step size collapses
    (non-finite derivatives) and ``RuntimeError`` after ``max_steps`` attempts.
    """
    rtol = check_finite_positive("rtol", rtol)
    atol = check_finite_positive("atol", atol)
    max_steps = check_positive_int("max_steps", max_steps)
    if not (0 < min_factor < 1 < max_factor and 0 < safety <= 1):
        raise ValueError("need 0 < min_factor < 1 < max_factor and 0 < safety <= 1")
    y0 = tuple(y0)
    span = t1 - t0
    direction = 1.0 if span >= 0 else -1.0
    if span == 0:
        return ODEResult(y0, 0, 0, 0)
    k1 = func(t0, y0)
    nfe = 1
    if first_step is None:
        h = _initial_step(func, t0, y0, k1, direction, rtol, atol, t1)
        nfe += 1
    else:
        h = check_finite_positive("first_step", first_step)
    t, y = t0, y0
    err_prev, just_rejected = 1e-4, False
    accepted = rejected = 0
    sizes: list[float] = []
    tiny = 1e-12 * abs(span)
    for _ in range(max_steps):
        remaining = t1 - t
        last = h >= abs(remaining)
        h_signed = remaining if last else direction * h
        ks: list[State] = [k1]
        for i in range(1, 7):
            yi = _combine(y, h_signed, ks, A[i])
            # the stages at c = 1 of the last step sit at t1 itself, not t + (t1 - t) rounded
            ks.append(func(t1 if last and C[i] == 1 else t + C[i] * h_signed, yi))
        nfe += 6
        y_new = yi  # stage 7 is evaluated at the fifth-order solution (FSAL)
        err = tuple(
            sum(w * h_signed * k[j] for w, k in zip(E, ks, strict=True) if w != 0.0)
            for j in range(len(y))
        )
        norm = float(_error_norm(err, y, y_new, rtol, atol))  # the one host read per step
        if math.isfinite(norm) and norm <= 1.0:
            t = t1 if last else t + h_signed
            y, k1 = y_new, ks[6]
            accepted += 1
            sizes.append(abs(h_signed))
            if t == t1:
                return ODEResult(y, nfe, accepted, rejected, sizes)
            factor = safety * max(norm, 1e-10) ** (-0.7 / 5) * max(err_prev, 1e-4) ** (0.4 / 5)
            factor = min(max(factor, min_factor), 1.0 if just_rejected else max_factor)
            err_prev, just_rejected = norm, False
        else:
            rejected += 1
            factor = min_factor
            if math.isfinite(norm):
                factor = min(max(safety * norm ** (-1 / 5), min_factor), 1.0)
            just_rejected = True
        h = abs(h_signed) * factor
        if not h >= tiny:  # also catches NaN
            raise FloatingPointError(
                f"dopri5: step size collapsed to {h:.3g} at t = {t:.6g} (error norm {norm:.3g}); "
                "the derivative is probably NaN/Inf or the problem is too stiff for rtol/atol"
            )
    raise RuntimeError(
        f"dopri5: {max_steps} steps did not reach t1 = {t1:g} (stopped at t = {t:.6g}); "
        "loosen rtol/atol or raise max_steps"
    )


def solve_ivp_scipy(
    func: ODEFunc, y0: State, t0: float, t1: float, *, rtol: float = 1e-5, atol: float = 1e-5
) -> ODEResult:
    """The same problem through ``scipy.integrate.solve_ivp(method="RK45")``, for cross-checks.

    scipy integrates one float64 vector on the host, so every evaluation copies the state off
    the device and back; its error norm is an RMS over the whole vector.
    """
    rtol = check_finite_positive("rtol", rtol)
    atol = check_finite_positive("atol", atol)
    y0 = tuple(y0)
    shapes = [y.shape for y in y0]
    sizes = [y.numel() for y in y0]
    like = y0[0]

    def unflatten(v: np.ndarray) -> State:
        parts = np.split(v, np.cumsum(sizes)[:-1])
        return tuple(
            torch.from_numpy(np.ascontiguousarray(p)).to(like.device, like.dtype).reshape(s)
            for p, s in zip(parts, shapes, strict=True)
        )

    def flatten(y: State) -> np.ndarray:
        return torch.cat([v.detach().reshape(-1).to("cpu", torch.float64) for v in y]).numpy()

    non_finite: list[float] = []

    def rhs(t: float, v: np.ndarray) -> np.ndarray:
        out = flatten(func(float(t), unflatten(v)))
        if not non_finite and not np.isfinite(out).all():
            non_finite.append(float(t))
        return out

    sol = scipy.integrate.solve_ivp(
        rhs,
        (t0, t1),
        flatten(y0),
        method="RK45",
        rtol=rtol,
        atol=atol,
    )
    if not sol.success:
        if non_finite:
            raise FloatingPointError(
                f"scipy solve_ivp failed ({sol.message}): the derivative was NaN/Inf at "
                f"t = {non_finite[0]:.6g}; check the score function"
            )
        raise RuntimeError(f"scipy solve_ivp failed: {sol.message}")
    steps = np.abs(np.diff(sol.t)).tolist()
    return ODEResult(unflatten(sol.y[:, -1]), int(sol.nfev), len(steps), 0, steps)
