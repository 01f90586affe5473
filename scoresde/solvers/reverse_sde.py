"""One-step stochastic samplers of the reverse SDE: Euler–Maruyama, reverse diffusion, DDPM.

Each is an ``AffineSolver``: x_next = a x + b score(x, t) + c z, with a, b, c below for a step
from t to t_next < t. a(t) is the SDE's drift coefficient (f = a x), g its diffusion, and
(r, w) the forward transition x_t | x_{t_next} ~ N(r x_{t_next}, w I).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from scoresde.core.ddpm import gaussian_posterior
from scoresde.core.sde import SDE
from scoresde.solvers.base import AffineSolver


class EulerMaruyama(AffineSolver):
    """Euler–Maruyama on the reverse SDE dx = [f(x,t) - g(t)^2 s(x,t)] dt + g(t) dW (dt < 0).

    x_mean = x + [a(t) x - g(t)^2 s] dt,   x_next = x_mean + g(t) sqrt(|dt|) z.
    Strong order 1/2, weak order 1.
    """

    name = "euler_maruyama"
    family = "SDE"
    stochastic = True
    pathwise_limit = "reverse_sde"
    order = 0.5

    def coefficients(self, sde: SDE, t: Tensor, t_next: Tensor):
        dt = t_next - t
        g = sde.diffusion(t)
        return 1 + sde.drift_coeff(t) * dt, -(g * g) * dt, g * torch.sqrt(-dt)


class ReverseDiffusion(AffineSolver):
    """Song et al.'s reverse-diffusion predictor, from the forward chain's own discretisation.

    The forward step t_next -> t is x_t = x_{t_next} + F + G z with F = (r - 1) x and G^2 = w
    (exact Gaussian transition of the SDE). Reversed: x_mean = x - F + G^2 s = (2 - r) x + w s,
    x_next = x_mean + G z. For the VP SDE, r = sqrt(1 - beta_i) and w = beta_i as in the paper.
    """

    name = "reverse_diffusion"
    family = "SDE"
    stochastic = True
    pathwise_limit = "reverse_sde"
    order = 0.5

    def coefficients(self, sde: SDE, t: Tensor, t_next: Tensor):
        r, w = sde.transition(t_next, t)
        return 2 - r, w, torch.sqrt(w)


class DDPMAncestral(AffineSolver):
    """Ho et al.'s ancestral sampler, on any SDE, schedule and grid.

    Between consecutive grid points the model posterior q(x_{t_next} | x_t, x0_hat) is used,
    with x0_hat from Tweedie. For the VP SDE, alpha = alpha_bar(t)/alpha_bar(t_next) and
    beta = 1 - alpha, the mean is (x - beta/sqrt(1 - alpha_bar(t)) eps)/sqrt(alpha) = (x + beta s)
    / sqrt(alpha); in general, with (r, w) the forward transition, mean = (x + w s) / r.
    Variance: "posterior" = beta~ = (1 - alpha_bar(t_next)) beta / (1 - alpha_bar(t)) (default,
    "fixed_small"), or "beta" = beta ("fixed_large"). No noise on the last step. With a
    ``DiscreteSchedule`` of N steps, steps = N and eps = 1/N this is the classical DDPM loop.
    """

    name = "ddpm_ancestral"
    family = "SDE"
    stochastic = True
    pathwise_limit = "reverse_sde"
    order = 0.5
    VARIANCES: ClassVar[tuple[str, ...]] = ("posterior", "beta")

    def __init__(self, variance: str = "posterior") -> None:
        if variance not in self.VARIANCES:
            raise ValueError(f"variance must be one of {self.VARIANCES}, got {variance!r}")
        self.variance = variance

    def coefficients(self, sde: SDE, t: Tensor, t_next: Tensor):
        r, w = sde.transition(t_next, t)
        m_next, s_next = sde.marginal(t_next)
        _, _, var = gaussian_posterior(m_next, s_next * s_next, r, w)
        return 1 / r, w / r, torch.sqrt(var if self.variance == "posterior" else w)

    def describe(self) -> str:
        return f"{self.name}(variance={self.variance})"

    def __repr__(self) -> str:
        return f"DDPMAncestral(variance={self.variance!r})"
