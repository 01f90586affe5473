"""How training draws the time t of each sample: the proposal of the denoising loss.

Each sampler returns (t, r), t a (B,) float64 tensor on the sde's clock and r the per-sample
factor that makes the loss an estimate of the uniform-t objective where that is the point
(r = 1 otherwise: the sampler then *is* the training distribution, as in EDM and SD3).

    uniform        t ~ U[t_min, t_max] (score_sde; t_min = 1e-5, t_max = T)
    discrete       t = i / N, i ~ U{1..N}, the timesteps of a ``DiscreteSchedule`` (Ho et al.)
    importance     p(t) proportional to g(t)^2 / s(t)^2 on [t_min, t_max], r = 1 / ((t_max -
                   t_min) p(t)): score_sde's importance sampling for likelihood weighting.
                   For every path of linear drift g^2 / s^2 = -d lambda / dt (lambda = log
                   SNR, as d s^2/dt = 2 (m'/m) s^2 + g^2), so the CDF is (lambda(t_min) -
                   lambda(t)) / (lambda(t_min) - lambda(t_max)) and t = lambda^-1 of a uniform
                   draw in lambda: the path's own inverse log-SNR, on VP, sub-VP, VE and any
                   Gaussian path alike. r = (lambda(t_min) - lambda(t_max)) s^2 / ((t_max -
                   t_min) g^2).
    lognormal      EDM: ln sigma ~ N(p_mean, p_std^2) (-1.2, 1.2), t = t_from_sigma(sigma),
                   sigma clamped to [sigma(t_min), sigma(t_max)]
    logit_normal   SD3 (Esser et al. 2024): t = sigmoid(u), u ~ N(loc, scale^2) (0, 1),
                   clamped to [t_min, t_max]

or a callable f(batch, generator, device) -> (B,) tensor of times (r = 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from scoresde.core.checks import as_float, check_finite_positive
from scoresde.core.sde import SDE

DEFAULT_T_MIN = 1e-5


class TimeSampler:
    """Draws (t, r) for a batch (module doc). ``bind(sde)`` fixes the interval on a path."""

    name = "sampler"

    def __init__(self, t_min: float = DEFAULT_T_MIN, t_max: float | None = None) -> None:
        self.t_min = as_float("t_min", t_min)
        self.t_max = None if t_max is None else as_float("t_max", t_max)

    def interval(self, sde: SDE) -> tuple[float, float]:
        """[t_min, t_max] on ``sde`` (t_max defaults to T), checked: 0 < t_min < t_max <= T."""
        t_max = sde.T if self.t_max is None else self.t_max
        if not 0.0 < self.t_min < t_max:
            raise ValueError(f"t_min must lie in (0, t_max = {t_max:g}), got {self.t_min!r}")
        if t_max > sde.T:
            raise ValueError(f"t_max must lie in (t_min, T = {sde.T:g}], got {t_max!r}")
        return self.t_min, t_max

    def draw(
        self, sde: SDE, batch: int, generator: torch.Generator | None, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def correction(self, sde: SDE, t: Tensor) -> Tensor:
        """r(t) for times drawn beforehand (1 unless the sampler reweights)."""
        return torch.ones_like(t)

    def describe(self) -> dict[str, object]:
        """The sampler's name and settings (for model.json)."""
        return {"name": self.name, **{k: v for k, v in vars(self).items() if not callable(v)}}


def _uniform(batch: int, generator, device) -> Tensor:
    return torch.rand(batch, generator=generator, device=device, dtype=torch.float64)


class Uniform(TimeSampler):
    name = "uniform"

    def draw(self, sde, batch, generator, device):
        lo, hi = self.interval(sde)
        t = lo + (hi - lo) * _uniform(batch, generator, device)
        return t, torch.ones_like(t)


class Discrete(TimeSampler):
    """t = i / N, i ~ U{1..N}; N from the sde's ``DiscreteSchedule`` unless given."""

    name = "discrete"

    def __init__(self, num_timesteps: int | None = None) -> None:
        super().__init__()
        self.num_timesteps = num_timesteps

    def steps(self, sde: SDE) -> int:
        n = self.num_timesteps
        if n is None:
            n = getattr(getattr(sde, "schedule", None), "num_timesteps", None)
        if n is None:
            raise ValueError(
                "t_sampler 'discrete' needs a DiscreteSchedule (a DDPM table) or num_timesteps"
            )
        return int(n)

    def draw(self, sde, batch, generator, device):
        n = self.steps(sde)
        i = torch.randint(1, n + 1, (batch,), generator=generator, device=device)
        t = i.double() / n * sde.T
        return t, torch.ones_like(t)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "num_timesteps": self.num_timesteps}


class Importance(TimeSampler):
    name = "importance"

    def bounds(self, sde: SDE) -> tuple[float, float, float, float]:
        lo, hi = self.interval(sde)
        lam = sde.log_snr(torch.tensor([lo, hi], dtype=torch.float64))
        lam_lo, lam_hi = float(lam[0]), float(lam[1])
        if not (math.isfinite(lam_lo) and math.isfinite(lam_hi)):
            raise ValueError(
                f"t_sampler 'importance' needs a finite log-SNR on [t_min, t_max]; it is "
                f"{lam_lo:g} .. {lam_hi:g} on {sde!r} (lower t_max below a zero-SNR end)"
            )
        return lo, hi, lam_lo, lam_hi

    def draw(self, sde, batch, generator, device):
        lo, hi, lam_lo, lam_hi = self.bounds(sde)
        u = _uniform(batch, generator, device)
        t = sde.t_from_log_snr(lam_lo + (lam_hi - lam_lo) * u).clamp(lo, hi)
        return t, self.correction(sde, t)

    def correction(self, sde: SDE, t: Tensor) -> Tensor:
        lo, hi, lam_lo, lam_hi = self.bounds(sde)
        s = sde.marginal(t)[1]
        return (lam_lo - lam_hi) * s**2 / ((hi - lo) * sde.diffusion(t) ** 2)


@dataclass
class LogNormal(TimeSampler):
    p_mean: float = -1.2
    p_std: float = 1.2
    t_min: float = DEFAULT_T_MIN
    t_max: float | None = None
    name = "lognormal"

    def __post_init__(self) -> None:
        as_float("p_mean", self.p_mean)
        check_finite_positive("p_std", self.p_std)

    def draw(self, sde, batch, generator, device):
        lo, hi = self.interval(sde)
        sig = sde.sigma(torch.tensor([lo, hi], dtype=torch.float64))
        z = torch.randn(batch, generator=generator, device=device, dtype=torch.float64)
        sigma = torch.exp(self.p_mean + self.p_std * z).clamp(float(sig[0]), float(sig[1]))
        t = sde.t_from_sigma(sigma).clamp(lo, hi)
        return t, torch.ones_like(t)


@dataclass
class LogitNormal(TimeSampler):
    loc: float = 0.0
    scale: float = 1.0
    t_min: float = DEFAULT_T_MIN
    t_max: float | None = None
    name = "logit_normal"

    def __post_init__(self) -> None:
        as_float("loc", self.loc)
        check_finite_positive("scale", self.scale)

    def draw(self, sde, batch, generator, device):
        lo, hi = self.interval(sde)
        z = torch.randn(batch, generator=generator, device=device, dtype=torch.float64)
        t = (sde.T * torch.sigmoid(self.loc + self.scale * z)).clamp(lo, hi)
        return t, torch.ones_like(t)


class OfBatch(TimeSampler):
    """A callable f(batch, generator, device) -> (B,) times."""

    name = "callable"

    def __init__(self, fn: Callable[..., Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def draw(self, sde, batch, generator, device):
        t = torch.as_tensor(self.fn(batch, generator, device), dtype=torch.float64)
        if t.shape != (batch,):
            raise ValueError(f"t_sampler: the callable returned shape {tuple(t.shape)}, "
                             f"expected ({batch},)")  # fmt: skip
        return t, torch.ones_like(t)


T_SAMPLERS: dict[str, Callable[[], TimeSampler]] = {
    "uniform": Uniform,
    "discrete": Discrete,
    "importance": Importance,
    "lognormal": LogNormal,
    "logit_normal": LogitNormal,
}


def time_sampler_from(value: str | TimeSampler | Callable[..., Tensor]) -> TimeSampler:
    """A ``TimeSampler`` from a name (``T_SAMPLERS``), an instance, or a callable."""
    if isinstance(value, TimeSampler):
        return value
    if isinstance(value, str):
        if value not in T_SAMPLERS:
            raise ValueError(f"t_sampler must be one of {', '.join(T_SAMPLERS)}, got {value!r}")
        return T_SAMPLERS[value]()
    if callable(value):
        return OfBatch(value)
    raise TypeError(f"t_sampler must be a name, a TimeSampler or a callable, got {value!r}")
