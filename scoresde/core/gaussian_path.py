"""Any Gaussian path, stated by its marginals: x_t | x_0 ~ N(m(t) x_0, s(t)^2 I) on [0, T].

A path given by a differentiable mean coefficient m(t) and std s(t) has a forward SDE with
linear drift, dx = f(t) x dt + g(t) dW, whose marginals are exactly these:

    f(t)   = d log m / dt = m'(t) / m(t)
    g(t)^2 = d s^2 / dt - 2 f(t) s(t)^2 = 2 s s' - 2 (m'/m) s^2

(differentiate Var x_t = s^2 along the SDE: d s^2/dt = 2 f s^2 + g^2). So a path has a score
s = -eps / s(t), a reverse SDE and a probability-flow ODE like VP and VE, and every solver
applies. The named SDEs ``VPSDE``, ``SubVPSDE`` and ``VESDE`` are such paths with closed forms.

Named paths (t in [0, 1]):

    rectified_flow()         m = 1 - t,          s = t            (the linear interpolant of flow
                                                                    matching; SD3, Flux)
    cosine_path()            m = cos(pi t / 2),  s = sin(pi t / 2)
    shifted(path, a)         the same path at tau(t) = a t / (1 + (a - 1) t): SD3's shift of the
                             flow sigma, sigma' = a sigma / (1 + (a - 1) sigma); Flux's
                             resolution-dependent shift mu is the number a = e^mu.

Zero terminal SNR. A path with m(T) = 0 (rectified flow, the cosine path, a DDPM table rescaled
as in Lin et al. 2024) has log-SNR -inf and f = -inf at T: x_T carries nothing of x_0. The
coefficient methods return these infinite values as they are; ``scoresde.sample`` starts such
paths with the limit step of ``scoresde.solvers.zero_terminal``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from scoresde.core.checks import as_float, as_time_tensor
from scoresde.core.schedules import solve_decreasing
from scoresde.core.sde import SDE

PathFn = Callable[[Tensor], Tensor]

# grid on which a path is checked at construction, and the slack of its monotonicity checks
CHECK_POINTS = 1025
CHECK_TOLERANCE = 1e-9


def derivative(fn: PathFn, t: Tensor) -> Tensor:
    """d fn / dt at t by autograd (zero where fn does not depend on t, e.g. a constant)."""
    with torch.enable_grad():
        tt = t.detach().to(torch.float64 if t.dtype == torch.float64 else t.dtype)
        tt = tt.clone().requires_grad_(True)
        out = fn(tt)
        if not out.requires_grad:
            return torch.zeros_like(t)
        (grad,) = torch.autograd.grad(out.sum(), tt, allow_unused=True)
    return torch.zeros_like(t) if grad is None else grad.to(t.dtype)


class GaussianPath(SDE):
    """The forward SDE of the Gaussian path with mean coefficient m(t) and std s(t).

    Args:
        mean: t -> m(t), tensor in, tensor out, differentiable by autograd (unless
            ``mean_rate`` is given); non-increasing, m(0) = 1, m >= 0.
        std: t -> s(t), strictly increasing, s >= 0, s(T) > 0.
        mean_rate, std_rate: t -> m'(t), s'(t) in closed form (default: autograd).
        log_snr_inverse: lambda -> t, the inverse of lambda(t) = 2 log(m / s) in closed form
            (default: bisection). It must accept -inf (giving T) where m(T) = 0.
        name: shown in reprs and reports.
        T: the end time (default 1).

    The path is checked once, on 1025 points of [0, T] in float64; a bad path raises a
    ValueError naming the function and the first time where it fails. (With m non-increasing
    and s increasing, g^2 = 2 s s' - 2 (m'/m) s^2 is a sum of non-negative terms, so no path
    that passes needs noise removed.)
    """

    def __init__(
        self,
        mean: PathFn,
        std: PathFn,
        *,
        mean_rate: PathFn | None = None,
        std_rate: PathFn | None = None,
        log_snr_inverse: PathFn | None = None,
        name: str = "custom",
        T: float = 1.0,
    ) -> None:
        for arg, fn in (("mean", mean), ("std", std)):
            if not callable(fn):
                raise TypeError(f"{arg} must be callable: t -> tensor")
        for arg, fn in (
            ("mean_rate", mean_rate),
            ("std_rate", std_rate),
            ("log_snr_inverse", log_snr_inverse),
        ):
            if fn is not None and not callable(fn):
                raise TypeError(f"{arg} must be callable or None")
        T = as_float("T", T)
        if not (math.isfinite(T) and T > 0):
            raise ValueError(f"T must be a finite number > 0, got {T}")
        self.T, self.name = T, str(name)
        self._mean, self._std = mean, std
        self._mean_rate, self._std_rate = mean_rate, std_rate
        self._log_snr_inverse = log_snr_inverse
        self._check_path()
        self._prior_std = float(self.marginal(torch.tensor(T, dtype=torch.float64))[1])

    # -- the path ---------------------------------------------------------------------------
    def marginal(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        t = as_time_tensor(t)
        return self._mean(t), self._std(t)

    def marginal_rate(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        t = as_time_tensor(t)
        dm = self._mean_rate(t) if self._mean_rate is not None else derivative(self._mean, t)
        ds = self._std_rate(t) if self._std_rate is not None else derivative(self._std, t)
        return dm, ds

    @property
    def prior_std(self) -> float:
        """s(T): the prior N(0, s(T)^2 I) ignores m(T) x_0 (exact where m(T) = 0)."""
        return self._prior_std

    def drift_coeff(self, t: Tensor | float) -> Tensor:
        """f(t) = m'(t) / m(t) (-inf where m = 0 and m' < 0)."""
        t = as_time_tensor(t)
        dm, _ = self.marginal_rate(t)
        return dm / self._mean(t)

    def diffusion_squared(self, t: Tensor | float) -> Tensor:
        """g(t)^2 = 2 s s' - 2 (m'/m) s^2, clamped at 0 against rounding."""
        t = as_time_tensor(t)
        m, s = self.marginal(t)
        dm, ds = self.marginal_rate(t)
        return (2 * s * ds - 2 * (dm / m) * s * s).clamp_min(0.0)

    def diffusion(self, t: Tensor | float) -> Tensor:
        return torch.sqrt(self.diffusion_squared(t))

    def sigma(self, t: Tensor | float) -> Tensor:
        """sigma~(t) = s(t) / m(t) (inf where m = 0)."""
        m, s = self.marginal(t)
        return s / m

    def t_from_log_snr(self, log_snr: Tensor | float) -> Tensor:
        lam = as_time_tensor(log_snr)
        if self._log_snr_inverse is not None:
            return self._log_snr_inverse(lam).clamp(0.0, self.T).to(lam.dtype)
        return solve_decreasing(self.log_snr, lam, 0.0, self.T).to(lam.dtype)

    def _check_path(self) -> None:
        """Refuse a path that is not a forward noising process (see the class doc)."""
        t = torch.linspace(0.0, self.T, CHECK_POINTS, dtype=torch.float64)
        m, s = self.marginal(t)
        for arg, v in (("mean", m), ("std", s)):
            if not isinstance(v, Tensor) or v.shape != t.shape:
                raise ValueError(f"{arg} must map a tensor of times to a tensor of the same shape")
            if not bool(torch.isfinite(v).all()):
                raise ValueError(f"{arg} is not finite at t = {_first(t, ~torch.isfinite(v))}")
            if bool((v < 0).any()):
                raise ValueError(f"{arg} is negative at t = {_first(t, v < 0)}")
        if abs(float(m[0]) - 1.0) > 1e-6:
            raise ValueError(f"mean must be 1 at t = 0 (x_0 itself), got m(0) = {float(m[0])}")
        rising = torch.diff(m) > CHECK_TOLERANCE
        if bool(rising.any()):
            raise ValueError(f"mean must not increase with t; it does at t = {_first(t, rising)}")
        flat = torch.diff(s) <= 0
        if bool(flat.any()):
            raise ValueError(
                f"std must increase strictly with t; it does not at t = {_first(t, flat)}"
            )
        if not float(s[-1]) > 0:
            raise ValueError("std must be > 0 at T")

    def __repr__(self) -> str:
        return f"GaussianPath({self.name!r})"


def _first(t: Tensor, mask: Tensor) -> float:
    return round(float(t[: mask.numel()][mask][0]), 6)


def _one_minus(t: Tensor) -> Tensor:
    return 1 - t


def _identity(t: Tensor) -> Tensor:
    return t


def _minus_one(t: Tensor) -> Tensor:
    return torch.full_like(t, -1.0)


def _one(t: Tensor) -> Tensor:
    return torch.ones_like(t)


def _rf_inverse(lam: Tensor) -> Tensor:
    # (1 - t) / t = e^(lambda/2)  ->  t = 1 / (1 + e^(lambda/2)) = sigmoid(-lambda / 2)
    return torch.sigmoid(-0.5 * lam)


def rectified_flow(shift: float = 1.0, *, mu: float | None = None) -> GaussianPath:
    """The linear interpolant x_t = (1 - t) x_0 + t eps (m = 1 - t, s = t): f = -1/(1 - t),
    g^2 = 2t / (1 - t). With ``shift`` a != 1 (or Flux's ``mu``, a = e^mu) the shifted path
    of SD3/Flux, m = 1 - tau(t), s = tau(t), tau(t) = a t / (1 + (a - 1) t)."""
    base = GaussianPath(
        _one_minus,
        _identity,
        mean_rate=_minus_one,
        std_rate=_one,
        log_snr_inverse=_rf_inverse,
        name="rectified-flow",
    )
    a = _shift_value(shift, mu)
    return base if a == 1.0 else shifted(base, a)


def _cos_mean(t: Tensor) -> Tensor:
    return torch.sin(0.5 * math.pi * (1 - t))  # = cos(pi t / 2), and exactly 0 at t = 1


def _cos_std(t: Tensor) -> Tensor:
    return torch.sin(0.5 * math.pi * t)


def _cos_mean_rate(t: Tensor) -> Tensor:
    return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)


def _cos_std_rate(t: Tensor) -> Tensor:
    return 0.5 * math.pi * torch.sin(0.5 * math.pi * (1 - t))


def _cos_inverse(lam: Tensor) -> Tensor:
    # cot(pi t / 2) = e^(lambda / 2)
    return torch.atan(torch.exp(-0.5 * lam)) * (2 / math.pi)


def cosine_path() -> GaussianPath:
    """The trigonometric interpolant m = cos(pi t / 2), s = sin(pi t / 2) (m^2 + s^2 = 1; the
    VP path of the cosine schedule without its offset and cap), zero SNR at t = 1."""
    return GaussianPath(
        _cos_mean,
        _cos_std,
        mean_rate=_cos_mean_rate,
        std_rate=_cos_std_rate,
        log_snr_inverse=_cos_inverse,
        name="cosine",
    )


def _shift_value(shift: float, mu: float | None) -> float:
    if mu is not None:
        mu = as_float("mu", mu)
        if not math.isfinite(mu):
            raise ValueError(f"mu must be finite, got {mu}")
        return math.exp(mu)
    shift = as_float("shift", shift)
    if not (math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a finite number > 0, got {shift}")
    return shift


class _Shift:
    """tau(t) = a t / (1 + (a - 1) t) on [0, 1], its derivative and its inverse."""

    def __init__(self, a: float) -> None:
        self.a = a

    def __call__(self, t: Tensor) -> Tensor:
        return self.a * t / (1 + (self.a - 1) * t)

    def rate(self, t: Tensor) -> Tensor:
        return self.a / (1 + (self.a - 1) * t) ** 2

    def inverse(self, u: Tensor) -> Tensor:
        return u / (self.a - (self.a - 1) * u)


def shifted(path: GaussianPath, shift: float = 1.0, *, mu: float | None = None) -> GaussianPath:
    """``path`` run on the shifted clock tau(t) = a t / (1 + (a - 1) t) (T = 1): m(tau(t)),
    s(tau(t)). a > 1 spends more of [0, 1] at high noise. ``mu`` gives a = e^mu (Flux's
    resolution-dependent shift, passed as a number)."""
    if not isinstance(path, GaussianPath):
        raise TypeError(f"path must be a GaussianPath, got {type(path).__name__}")
    if path.T != 1.0:
        raise ValueError(f"shifted needs a path on [0, 1], got T = {path.T}")
    a = _shift_value(shift, mu)
    tau = _Shift(a)

    def mean(t: Tensor) -> Tensor:
        return path.marginal(tau(t))[0]

    def std(t: Tensor) -> Tensor:
        return path.marginal(tau(t))[1]

    def mean_rate(t: Tensor) -> Tensor:
        return path.marginal_rate(tau(t))[0] * tau.rate(t)

    def std_rate(t: Tensor) -> Tensor:
        return path.marginal_rate(tau(t))[1] * tau.rate(t)

    def inverse(lam: Tensor) -> Tensor:
        return tau.inverse(path.t_from_log_snr(lam))

    return GaussianPath(
        mean,
        std,
        mean_rate=mean_rate,
        std_rate=std_rate,
        log_snr_inverse=inverse,
        name=f"{path.name}:shift={a:g}",
    )
