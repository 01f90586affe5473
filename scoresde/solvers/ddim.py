"""DDIM with stochasticity eta (Song, Meng & Ermon 2021): the first-order exponential integrator
in noise prediction (= DPM-Solver-1 at eta = 0), with eta times the posterior std added."""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde.core.sde import SDE
from scoresde.solvers.base import AffineSolver
from scoresde.solvers.exponential_toolkit import check_eta


class DDIM(AffineSolver):
    """DDIM with stochasticity eta (Song, Meng & Ermon 2021, eq. 12), on any grid.

    From s to t < s (alpha = m, sigma = s): x0 = (x_s - sigma_s eps)/alpha_s and
    x_t = alpha_t x0 + sqrt(sigma_t^2 - c^2) eps + c z, where c = eta times the std of the
    Gaussian posterior q(x_t | x_s, x0). With the forward transition x_s | x_t ~ N(r x_t, w I)
    that std is sigma_t sqrt(w) / sigma_s, for every SDE here:
    VP (r = alpha_s/alpha_t): c = eta (sigma_t/sigma_s) sqrt(1 - alpha_s^2/alpha_t^2), eq. 16;
    VE (r = 1, w = sigma_s^2 - sigma_t^2): c = eta sqrt(sigma_t^2 (sigma_s^2 - sigma_t^2)) /
    sigma_s, k-diffusion's ancestral sigma_up. eta = 0 is deterministic (= DPM-Solver-1);
    eta = 1 on consecutive DDPM timesteps is DDPM ancestral sampling with the posterior variance.
    """

    name = "ddim"
    family = "exponential"

    def __init__(self, eta: float = 0.0) -> None:
        self.eta = check_eta(eta)
        self.stochastic = self.eta > 0

    def coefficients(self, sde: SDE, t: Tensor, t_next: Tensor):
        a_s, s_s = sde.marginal(t)
        a_t, s_t = sde.marginal(t_next)
        if self.eta == 0:  # no square roots at 0, whose derivative would poison a grid's grad
            return a_t / a_s, -s_s * (s_t - a_t * s_s / a_s), torch.zeros_like(t)
        _, w = sde.transition(t_next, t)
        c = self.eta * s_t * w.clamp_min(0).sqrt() / s_s
        e_coef = (s_t**2 - c**2).clamp_min(0).sqrt() - a_t * s_s / a_s
        return a_t / a_s, -s_s * e_coef, c  # eps = -sigma_s score

    @property
    def pathwise_limit(self) -> str | None:
        # eta = 1 is ancestral sampling, a discretisation of the reverse SDE; 0 < eta < 1
        # discretises a different SDE that no reference here solves
        return {0.0: "ode", 1.0: "reverse_sde"}.get(self.eta)

    def describe(self) -> str:
        return f"{self.name}(eta={self.eta:g})"
