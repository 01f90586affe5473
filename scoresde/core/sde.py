"""Forward SDEs with linear drift, their marginals, reverse SDE and probability-flow ODE.

The three named SDEs here (and every ``GaussianPath``, in ``scoresde.core.gaussian_path``) have
the form dx = a(t) x dt + g(t) dW on t in [0, T], T = 1, so the
perturbation kernel is Gaussian: x_t | x_0 ~ N(m(t) x_0, s(t)^2 I). Each class gives

    drift(x, t)       = a(t) x
    diffusion(t)      = g(t)
    marginal(t)       = (m(t), s(t))
    marginal_rate(t)  = (m'(t), s'(t))
    reverse_drift     = f(x, t) - g(t)^2 score(x, t)           (the reverse-time SDE, Anderson 1982)
    probability_flow_drift = f(x, t) - 1/2 g(t)^2 score(x, t)   (the probability-flow ODE)
    transition(s, t)  = (r, w): x_t | x_s ~ N(r x_s, w I), r = m(t)/m(s), w = s(t)^2 - r^2 s(s)^2

Shapes: x is (B, ...) of any rank; t is a scalar tensor or a (B,) tensor of per-sample times
in [0, T] (units: the same dimensionless time as the schedule). Coefficients are broadcast
against x explicitly, never by assuming 4-D images.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from scoresde.core.checks import as_float, as_time_tensor, broadcast_time, check_times
from scoresde.core.schedules import LinearSchedule, NoiseSchedule, solve_decreasing

ScoreFn = Callable[[Tensor, Tensor], Tensor]


class SDE:
    """Base class of linear-drift SDEs: the coefficient contract every solver reads.

    Subclasses implement ``drift_coeff``, ``diffusion``, ``marginal`` and ``prior_std``, and
    override ``log_snr`` / ``t_from_log_snr`` where closed forms exist. Every coefficient
    method is tensor in, tensor out (t a tensor of any shape, or a number), with no check of
    t: they run inside sampling loops, where a check would read the tensor on the host. Entry
    points (``sample``, the grids) validate times once, with ``check_time``.
    """

    T: float = 1.0

    def drift_coeff(self, t: Tensor | float) -> Tensor:
        """a(t) in the drift f(x, t) = a(t) x."""
        raise NotImplementedError

    def diffusion(self, t: Tensor | float) -> Tensor:
        """g(t), same shape as t."""
        raise NotImplementedError

    def marginal(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """(m(t), s(t)): x_t | x_0 ~ N(m(t) x_0, s(t)^2 I). Shapes as t."""
        raise NotImplementedError

    def marginal_rate(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """(m'(t), s'(t)), the time derivatives of the marginal coefficients. From the SDE:
        m' = f m and d s^2/dt = 2 f s^2 + g^2, so s' = (g^2 + 2 f s^2) / (2 s) (infinite at
        s = 0). ``GaussianPath`` gives them directly."""
        t = as_time_tensor(t)
        m, s = self.marginal(t)
        f, g = self.drift_coeff(t), self.diffusion(t)
        return f * m, (g * g + 2 * f * s * s) / (2 * s)

    @property
    def prior_std(self) -> float:
        raise NotImplementedError

    def log_snr(self, t: Tensor | float) -> Tensor:
        """lambda(t) = log(m(t)^2 / s(t)^2), decreasing in t."""
        m, s = self.marginal(as_time_tensor(t))
        return 2 * (torch.log(m) - torch.log(s))

    def t_from_log_snr(self, log_snr: Tensor | float) -> Tensor:
        """The time at which the log signal-to-noise ratio equals ``log_snr`` (clamped to
        [0, T]); here by bisection on the decreasing lambda(t)."""
        lam = as_time_tensor(log_snr)
        return solve_decreasing(self.log_snr, lam, 0.0, self.T).to(lam.dtype)

    def sigma(self, t: Tensor | float) -> Tensor:
        """sigma~(t) = s(t) / m(t) = exp(-lambda(t) / 2): the noise level of x_t / m(t) (EDM's
        and k-diffusion's sigma; VE's sigma(t) itself)."""
        return torch.exp(-0.5 * self.log_snr(t))

    def t_from_sigma(self, sigma: Tensor | float) -> Tensor:
        """The time at which sigma~(t) = s/m equals ``sigma``: t_from_log_snr(-2 log sigma)."""
        return self.t_from_log_snr(-2 * torch.log(as_time_tensor(sigma)))

    def transition(self, s: Tensor | float, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """(r, w): x_t | x_s ~ N(r x_s, w I), s <= t; r = m(t)/m(s), w = s_t^2 - r^2 s_s^2."""
        m_s, std_s = self.marginal(as_time_tensor(s))
        m_t, std_t = self.marginal(as_time_tensor(t))
        r = m_t / m_s
        return r, std_t**2 - (r * std_s) ** 2

    def drift(self, x: Tensor, t: Tensor | float) -> Tensor:
        """f(x, t) = a(t) x (t a scalar or a (B,) tensor, broadcast against x)."""
        return broadcast_time(self.drift_coeff(as_time_tensor(t, like=x)), x) * x

    def reverse_drift(self, x: Tensor, t: Tensor | float, score: Tensor) -> Tensor:
        """Drift of the reverse-time SDE dx = [f(x,t) - g(t)^2 score] dt + g(t) dW (dt < 0)."""
        t = as_time_tensor(t, like=x)
        return self.drift(x, t) - broadcast_time(self.diffusion(t) ** 2, x) * score

    def probability_flow_drift(self, x: Tensor, t: Tensor | float, score: Tensor) -> Tensor:
        """Velocity of the probability-flow ODE dx/dt = f(x,t) - 1/2 g(t)^2 score."""
        t = as_time_tensor(t, like=x)
        return self.drift(x, t) - 0.5 * broadcast_time(self.diffusion(t) ** 2, x) * score

    def perturb(self, x0: Tensor, t: Tensor | float, noise: Tensor) -> Tensor:
        """x_t = m(t) x0 + s(t) noise; ``noise`` is standard normal of x0's shape."""
        if noise.shape != x0.shape:
            raise ValueError(
                f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}"
            )
        m, s = self.marginal(self.check_time(as_time_tensor(t, like=x0)))
        return broadcast_time(m, x0) * x0 + broadcast_time(s, x0) * noise

    # -- validation, for entry points -----------------------------------------------------------
    def reaches_zero_snr(self) -> bool:
        """True when m(T) = 0 (zero terminal SNR: rectified flow, rescaled DDPM tables); one
        host read, for entry points."""
        return float(self.marginal(torch.tensor(self.T, dtype=torch.float64))[0]) == 0.0

    def check_time(self, t: Tensor | float, name: str = "t") -> Tensor:
        """``t`` as a tensor, after checking it lies in [0, T] (reads it on the host)."""
        t = as_time_tensor(t)
        check_times(name, t, 0.0, self.T, include_low=True)
        return t

    def prior_sample(
        self,
        shape: tuple[int, ...] | torch.Size,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """A draw from the prior N(0, prior_std^2 I) of the given (B, ...) shape."""
        shape = tuple(shape)
        if len(shape) < 1 or any((not isinstance(n, int)) or n < 1 for n in shape):
            raise ValueError(f"shape must be a tuple of positive ints (B, ...), got {shape}")
        if device is None and generator is not None:
            device = generator.device
        z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return z * self.prior_std

    def prior_log_prob(self, x: Tensor) -> Tensor:
        """Per-sample log density of the prior, shape (B,): sum over all non-batch dims."""
        return normal_log_prob(x, self.prior_std)


def normal_log_prob(z: Tensor, std: float) -> Tensor:
    """log N(z; 0, std^2 I) per sample, shape (B,): summed over all non-batch dims."""
    d = z[0].numel()
    sq = z.reshape(z.shape[0], -1).pow(2).sum(dim=1)
    return -0.5 * d * math.log(2 * math.pi * std**2) - sq / (2 * std**2)


class VPSDE(SDE):
    """Variance-preserving SDE: dx = -1/2 beta(t) x dt + sqrt(beta(t)) dW.

    m(t) = sqrt(alpha_bar(t)), s(t) = sqrt(1 - alpha_bar(t)); prior N(0, I). The schedule
    (linear, cosine, a DDPM table or your own) supplies alpha_bar and beta.
    """

    def __init__(self, schedule: NoiseSchedule | None = None) -> None:
        self.schedule = schedule if schedule is not None else LinearSchedule()
        if not isinstance(self.schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")

    prior_std = 1.0

    def drift_coeff(self, t: Tensor | float) -> Tensor:
        return -0.5 * self.schedule.beta(t)

    def diffusion(self, t: Tensor | float) -> Tensor:
        return torch.sqrt(self.schedule.beta(t))

    def marginal(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        log_ab = self.schedule.log_alpha_bar(t)
        return torch.exp(0.5 * log_ab), torch.sqrt(-torch.expm1(log_ab))

    def log_snr(self, t: Tensor | float) -> Tensor:
        return self.schedule.log_snr(t)

    def t_from_log_snr(self, log_snr: Tensor | float) -> Tensor:
        return self.schedule.t_from_log_snr(log_snr)

    def __repr__(self) -> str:
        return f"VPSDE({self.schedule!r})"


class SubVPSDE(VPSDE):
    """Song et al.'s sub-VP SDE: dx = -1/2 beta(t) x dt + sqrt(beta(t) (1 - alpha_bar(t)^2)) dW.

    m(t) = sqrt(alpha_bar(t)), s(t) = 1 - alpha_bar(t) (not its square root); prior N(0, I).
    """

    def diffusion(self, t: Tensor | float) -> Tensor:
        log_ab = self.schedule.log_alpha_bar(t)
        return torch.sqrt(self.schedule.beta(t) * -torch.expm1(2 * log_ab))

    def marginal(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        log_ab = self.schedule.log_alpha_bar(t)
        return torch.exp(0.5 * log_ab), -torch.expm1(log_ab)

    def log_snr(self, t: Tensor | float) -> Tensor:
        log_ab = self.schedule.log_alpha_bar(t)
        return log_ab - 2 * torch.log(-torch.expm1(log_ab))

    def t_from_log_snr(self, log_snr: Tensor | float) -> Tensor:
        # lambda = log ab - 2 log(1 - ab) is decreasing in t: SDE's bisection
        return SDE.t_from_log_snr(self, log_snr)

    def __repr__(self) -> str:
        return f"SubVPSDE({self.schedule!r})"


class VESDE(SDE):
    """Variance-exploding SDE: dx = sigma(t) sqrt(2 log(sigma_max / sigma_min)) dW, no drift.

    sigma(t) = sigma_min (sigma_max / sigma_min)^t; m(t) = 1, s(t) = sigma(t); prior
    N(0, sigma_max^2 I). As in Song et al., x(0) is taken to carry sigma_min noise already, so
    the marginal std is sigma(t) itself (the exact forward variance from a noise-free x(0) would
    be sigma(t)^2 - sigma_min^2, a relative difference below 1e-4 for t > 0.2 at the defaults).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        sigma_min, sigma_max = as_float("sigma_min", sigma_min), as_float("sigma_max", sigma_max)
        if not (math.isfinite(sigma_min) and sigma_min > 0):
            raise ValueError(f"sigma_min must be a finite number > 0, got {sigma_min}")
        if not (math.isfinite(sigma_max) and sigma_max > sigma_min):
            raise ValueError(
                f"sigma_max must be finite and > sigma_min = {sigma_min}, got {sigma_max}"
            )
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self._log_ratio = math.log(sigma_max / sigma_min)

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def sigma(self, t: Tensor | float) -> Tensor:
        """sigma(t) = sigma_min (sigma_max / sigma_min)^t (= s(t), as m = 1)."""
        return self.sigma_min * torch.exp(self._log_ratio * as_time_tensor(t))

    def drift_coeff(self, t: Tensor | float) -> Tensor:
        return torch.zeros_like(as_time_tensor(t))

    def diffusion(self, t: Tensor | float) -> Tensor:
        return self.sigma(t) * math.sqrt(2 * self._log_ratio)

    def marginal(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        t = as_time_tensor(t)
        return torch.ones_like(t), self.sigma(t)

    def log_snr(self, t: Tensor | float) -> Tensor:
        return -2 * (math.log(self.sigma_min) + self._log_ratio * as_time_tensor(t))

    def t_from_log_snr(self, log_snr: Tensor | float) -> Tensor:
        t = (-0.5 * as_time_tensor(log_snr) - math.log(self.sigma_min)) / self._log_ratio
        return t.clamp(0.0, self.T)

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g})"
