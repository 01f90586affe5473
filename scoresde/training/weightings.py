"""Loss weightings lambda(t) of denoising score matching, as weights on the x_0 error.

Every parameterisation's squared error is a multiple of the x_0 error at the same (x_t, t)
(``scoresde.training.losses``), so one weighting serves every prediction type. With
m = m(t), s = s(t), SNR = m^2 / s^2, sigma = s / m and g(t) the SDE's diffusion, the weight on
|x0_hat - x_0|^2 is

    simple       the unweighted MSE of the network's own output (Ho et al.'s eps-loss, the
                 v-loss, the flow-matching loss): 1 / c(t), c the prediction's factor
    sigma2       score_sde's lambda(t) = s^2 on the score error, s^2 |s_hat - grad log p|^2
                 = |eps_hat - eps|^2 = SNR |x0_hat - x_0|^2
    likelihood   score_sde's g(t)^2 |s_hat - grad log p|^2 = (g^2 / s^2) SNR |x0_hat - x_0|^2
                 (Song et al. 2021: uniform t then bounds the negative log-likelihood)
    min_snr      Min-SNR-gamma (Hang et al. 2023): min(SNR, gamma) |x0_hat - x_0|^2, i.e.
                 min(SNR, gamma) / SNR on the eps error, min(SNR, gamma) / (SNR + 1) on the
                 v error of a VP path
    edm          EDM's (sigma^2 + sigma_d^2) / (sigma sigma_d)^2 |x0_hat - x_0|^2

or a callable w(t) -> (B,) tensor that multiplies the network's own MSE (like ``simple``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from scoresde.core.checks import check_finite_positive
from scoresde.core.preconditioning import EDMPreconditioning


class Weighting:
    """A loss weighting: ``x0_weight(m, s, g2)`` is the weight on the x_0 error (module doc),
    ``factor`` the weight on the network's own MSE, whose x_0 error is c times it."""

    name = "weighting"
    needs_diffusion = False

    def x0_weight(self, m: Tensor, s: Tensor, g2: Tensor) -> Tensor:
        raise NotImplementedError

    def factor(self, t: Tensor, m: Tensor, s: Tensor, g2: Tensor, c: Tensor) -> Tensor:
        """The weight on |net - target|^2: x0_weight * c."""
        return self.x0_weight(m, s, g2) * c

    def describe(self) -> dict[str, object]:
        return {"name": self.name}


class Simple(Weighting):
    name = "simple"

    def factor(self, t: Tensor, m: Tensor, s: Tensor, g2: Tensor, c: Tensor) -> Tensor:
        return torch.ones_like(t)


class Sigma2(Weighting):
    name = "sigma2"

    def x0_weight(self, m: Tensor, s: Tensor, g2: Tensor) -> Tensor:
        return (m / s) ** 2


class Likelihood(Weighting):
    name = "likelihood"
    needs_diffusion = True  # x0_weight reads g(t)^2

    def x0_weight(self, m: Tensor, s: Tensor, g2: Tensor) -> Tensor:
        return g2 * m**2 / s**4


@dataclass(frozen=True)
class MinSNR(Weighting):
    gamma: float = 5.0
    name = "min_snr"

    def __post_init__(self) -> None:
        check_finite_positive("gamma", self.gamma)

    def x0_weight(self, m: Tensor, s: Tensor, g2: Tensor) -> Tensor:
        return torch.clamp((m / s) ** 2, max=self.gamma)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "gamma": self.gamma}


@dataclass(frozen=True)
class EDMWeight(Weighting):
    preconditioning: EDMPreconditioning = field(default_factory=EDMPreconditioning)
    name = "edm"

    def x0_weight(self, m: Tensor, s: Tensor, g2: Tensor) -> Tensor:
        return self.preconditioning.weight(s / m)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "sigma_data": self.preconditioning.sigma_data}


class OfTime(Weighting):
    """A callable w(t) multiplying the network's own MSE."""

    name = "callable"

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.fn = fn

    def factor(self, t: Tensor, m: Tensor, s: Tensor, g2: Tensor, c: Tensor) -> Tensor:
        return self.fn(t).to(t.dtype)


WEIGHTINGS: dict[str, Callable[[], Weighting]] = {
    "simple": Simple,
    "sigma2": Sigma2,
    "likelihood": Likelihood,
    "min_snr": MinSNR,
    "edm": EDMWeight,
}


def weighting_from(value: str | Weighting | Callable[[Tensor], Tensor]) -> Weighting:
    """A ``Weighting`` from a name (``WEIGHTINGS``), an instance, or a callable w(t)."""
    if isinstance(value, Weighting):
        return value
    if isinstance(value, str):
        if value not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {value!r}")
        return WEIGHTINGS[value]()
    if callable(value):
        return OfTime(value)
    raise TypeError(f"weighting must be a name, a Weighting or a callable w(t), got {value!r}")
