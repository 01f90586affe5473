"""Denoise, then renoise with fresh noise: x_next = m(t_next) x0_hat(x, t) + s(t_next) z.

The stochastic sampler of diffusers' FlowMatchEulerDiscreteScheduler with
``stochastic_sampling=True`` (on rectified flow: x_next = (1 - sigma_next) x0_hat +
sigma_next z), and the multistep sampling of consistency models (Song et al. 2023, Algorithm 1)
on a general Gaussian path.
"""

from __future__ import annotations

from torch import Tensor

from scoresde.core.sde import SDE
from scoresde.solvers.base import AffineSolver


class Renoise(AffineSolver):
    """x_next = m(t_next) x0_hat(x, t) + s(t_next) z, z ~ N(0, I) fresh at every step.

    Each step draws from q(x_next | x_0 = x0_hat), the forward marginal around the current
    denoised estimate, and keeps nothing of x beyond x0_hat. With Tweedie's
    x0_hat = (x + s^2 score) / m the step is affine in (x, score, z):

        a = m(t_next) / m(t),   b = m(t_next) s(t)^2 / m(t),   c = s(t_next)

    (the last step, to t = 0, is x0_hat itself). On a path with m(T) = 0 the first step is
    taken by ``zero_terminal`` with the same formula, x0_hat read from the model at T.

    It is not a discretisation of the reverse SDE and does not converge to p_0 as the steps
    shrink: x_next has the variance m_next^2 Var(x0_hat) + s_next^2, short of the marginal's
    by m_next^2 E[Var(x_0 | x_t)], which does not vanish with the step size (the loss shrinks
    only as t -> 0). It is a few-step sampler for models trained to denoise in one step
    (consistency and flow-matching models); ``pathwise_limit`` is None.
    """

    name = "renoise"
    family = "SDE"
    stochastic = True

    def coefficients(self, sde: SDE, t: Tensor, t_next: Tensor):
        m, s = sde.marginal(t)
        m_next, s_next = sde.marginal(t_next)
        return m_next / m, m_next * s * s / m, s_next

    @property
    def pathwise_limit(self) -> str | None:
        return None
