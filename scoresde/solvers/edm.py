"""EDM's Heun sampler with stochastic churn (Karras et al. 2022, "Elucidating the Design Space
of Diffusion-Based Generative Models", Algorithm 2), for any SDE here.

EDM works with the scaled state x~ = x / m(t) and the noise level sigma~ = s(t) / m(t)
(= sqrt((1 - alpha_bar)/alpha_bar) for VP, = exp(-lambda)), where the probability-flow ODE is
dx~/dsigma~ = (x~ - D(x~; sigma~)) / sigma~ with D the x0 prediction. One step from sigma_i:

    gamma = min(S_churn / N, sqrt(2) - 1) if S_tmin <= sigma_i <= S_tmax else 0
    sigma^ = sigma_i (1 + gamma);  x^ = x_i + sqrt(sigma^^2 - sigma_i^2) S_noise z
    d = (x^ - D(x^; sigma^)) / sigma^;          x_{i+1} = x^ + (sigma_{i+1} - sigma^) d
    d' = (x_{i+1} - D(x_{i+1}; sigma_{i+1})) / sigma_{i+1}
    x_{i+1} = x^ + (sigma_{i+1} - sigma^) (d + d') / 2

The last step (sigma = 0) is D itself: Tweedie's denoiser. Use ``time_grid="karras"`` for
EDM's rho = 7 grid. NFE = 2N - 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoresde.checks import check_finite_positive
from scoresde.solvers.base import Run, Solver, tweedie_step
from scoresde.solvers.exponential import _Predictor


class EDMHeun(Solver):
    """EDM Heun (second order) with optional churn; deterministic when ``s_churn`` = 0."""

    name = "edm_heun"
    evals_per_step = 2
    order = 2.0

    def __init__(
        self,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
    ) -> None:
        if not (math.isfinite(s_churn) and s_churn >= 0):
            raise ValueError(f"s_churn must be a finite number >= 0, got {s_churn}")
        if not (0 <= s_tmin <= s_tmax):
            raise ValueError(f"need 0 <= s_tmin <= s_tmax, got {s_tmin}, {s_tmax}")
        self.s_churn, self.s_tmin, self.s_tmax = float(s_churn), float(s_tmin), float(s_tmax)
        self.s_noise = check_finite_positive("s_noise", s_noise)
        self.stochastic = self.s_churn > 0

    def planned_nfe(self, steps: int) -> int:
        return 2 * steps - 1

    def prepare(self, run: Run):
        sde, times = run.sde, run.grid[:-1]
        m, s = sde._marginal(times)
        sig = (s / m).tolist()
        m = m.tolist()
        rows = []
        n = run.steps
        for k in range(n - 1):
            gamma = 0.0
            if self.s_churn > 0 and self.s_tmin <= sig[k] <= self.s_tmax:
                gamma = min(self.s_churn / n, math.sqrt(2) - 1)
            t_hat, m_hat, sig_hat = run.t[k], m[k], sig[k]
            if gamma > 0:
                lam_hat = -math.log(sig[k] * (1 + gamma))
                th = float(sde._t_from_log_snr(torch.tensor(2 * lam_hat, dtype=torch.float64)))
                th = min(th, sde.T)
                mh, sh = (float(v) for v in sde._marginal(torch.tensor(th, dtype=torch.float64)))
                t_hat, m_hat, sig_hat = run.t[k].new_full(run.t[k].shape, th), mh, sh / mh
            churn = math.sqrt(max(sig_hat**2 - sig[k] ** 2, 0.0)) * self.s_noise
            rows.append((m[k], t_hat, m_hat, sig_hat, churn, m[k + 1], sig[k + 1]))
        return rows, _Predictor(run)

    def step(self, x: Tensor, k: int, run: Run, plan) -> Tensor:
        if run.is_last(k):
            return tweedie_step(x, run)
        rows, predict = plan
        m, t_hat, m_hat, sig_hat, churn, m_next, sig_next = rows[k]
        xs = x / m  # scaled state x~
        if churn > 0:
            xs.add_(run.noise.normal(), alpha=churn)
        d = (xs - predict.x0(xs * m_hat, t_hat, m_hat, sig_hat * m_hat)) / sig_hat
        dsig = sig_next - sig_hat
        x_next = xs + d * dsig
        d2 = predict.x0(x_next * m_next, run.t[k + 1], m_next, sig_next * m_next)
        d2 = (x_next - d2) / sig_next
        return (xs + (d + d2) * (0.5 * dsig)).mul_(m_next)

    def describe(self) -> str:
        if not self.stochastic:
            return self.name
        return f"{self.name}(churn={self.s_churn:g}, tmin={self.s_tmin:g}, tmax={self.s_tmax:g})"
