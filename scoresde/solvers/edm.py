"""EDM's Heun sampler with stochastic churn (Karras et al. 2022, "Elucidating the Design Space
of Diffusion-Based Generative Models", Algorithm 2), for any SDE here.

EDM works with the scaled state x~ = x / m(t) and the noise level sigma~ = s(t) / m(t)
(= sqrt((1 - alpha_bar)/alpha_bar) for VP, = exp(-lambda)), where the probability-flow ODE is
dx~/dsigma~ = (x~ - D(x~; sigma~)) / sigma~ = eps_hat, with D the x0 prediction. One step from
sigma_i to sigma_{i+1}, i = 0 .. N-1, sigma_N = s(0)/m(0) (0 on VP):

    gamma = min(S_churn / N, sqrt(2) - 1) if S_tmin <= sigma_i <= S_tmax else 0
    sigma^ = sigma_i (1 + gamma);  x^ = x_i + sqrt(sigma^^2 - sigma_i^2) S_noise z
    d = (x^ - D(x^; sigma^)) / sigma^;          x_{i+1} = x^ + (sigma_{i+1} - sigma^) d
    if sigma_{i+1} != 0:  d' = (x_{i+1} - D(x_{i+1}; sigma_{i+1})) / sigma_{i+1}
                          x_{i+1} = x^ + (sigma_{i+1} - sigma^) (d + d') / 2

as in EDM's ``generate.py`` and k-diffusion's ``sample_heun``: churn applies on every step,
the last one included, and sigma^ is not capped. The last step to sigma = 0 is an Euler step,
which is D(x^; sigma^) itself; with ``denoise=True`` (the default of ``sample``) that is also
what the last step is on VE, whose s(0) = sigma_min > 0; with ``denoise=False`` VE ends with a
Heun step to sigma_min.

A sigma^ above the SDE's sigma(T) (churn on the first step) has no time t <= T. There D is
taken as k-diffusion's discrete-time wrappers do: the network is evaluated at T (its time
label clamped) on the input scaled for sigma^, D = x^ - sigma^ eps_hat(c x^, T), with
c = 1/sqrt(1 + sigma^^2) on VP (k-diffusion's c_in) and c = m(T) otherwise.
``cap_sigma_hat=True`` instead caps sigma^ at sigma(T), so the first step gets no churn (the
behaviour before this option).
Use ``time_grid="karras"`` for EDM's rho = 7 grid. NFE = 2N - 1 (2N on VE without denoise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from scoresde.core.checks import check_finite_positive
from scoresde.solvers.base import Run, Solver
from scoresde.solvers.exponential_toolkit import Predictor


@dataclass(frozen=True)
class HeunLevel:
    """One step's constants: the churned level and where its denoiser is evaluated."""

    m: float  # m(t_i): x~ = x / m
    sig: float  # sigma_i
    sig_hat: float  # sigma^ = sigma_i (1 + gamma)
    t_eval: Tensor  # (B,) time at which D(.; sigma^) is evaluated
    m_eval: float  # network input = m_eval x~
    s_eval: float  # s(t_eval), for eps from a plain score


def _m_above(sig_hat: float, m_T: float, s_T: float) -> float:
    """Input scale for sigma^ > sigma(T): where m^2 + s^2 = 1 (VP), the m of that level,
    1/sqrt(1 + sigma^^2) (k-diffusion's c_in); otherwise m(T)."""
    if abs(m_T * m_T + s_T * s_T - 1) < 1e-9:
        return 1 / math.sqrt(1 + sig_hat**2)
    return m_T


@dataclass(frozen=True)
class EDMPlan:
    """EDM Heun's constants: the per-step ``levels``, and at the grid points t_0 .. t_N the
    noise levels sigma_k = s(t_k)/m(t_k) (``sigma``) and the scales m(t_k) (``m``). No run state."""

    levels: list[HeunLevel]
    sigma: list[float]
    m: list[float]
    predict: Predictor


class EDMHeun(Solver):
    """EDM Heun (second order) with optional churn; deterministic when ``s_churn`` = 0."""

    name = "edm_heun"
    family = "ODE"
    evals_per_step = 2
    order = 2.0

    def __init__(
        self,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
        cap_sigma_hat: bool = False,
    ) -> None:
        if not (math.isfinite(s_churn) and s_churn >= 0):
            raise ValueError(f"s_churn must be a finite number >= 0, got {s_churn}")
        if not (0 <= s_tmin <= s_tmax):
            raise ValueError(f"need 0 <= s_tmin <= s_tmax, got {s_tmin}, {s_tmax}")
        self.s_churn, self.s_tmin, self.s_tmax = float(s_churn), float(s_tmin), float(s_tmax)
        self.s_noise = check_finite_positive("s_noise", s_noise)
        self.cap_sigma_hat = bool(cap_sigma_hat)
        self.stochastic = self.s_churn > 0

    def planned_nfe(self, steps: int) -> int:
        return 2 * steps - 1

    def gamma(self, sigma: float, steps: int) -> float:
        if self.s_churn > 0 and self.s_tmin <= sigma <= self.s_tmax:
            return min(self.s_churn / steps, math.sqrt(2) - 1)
        return 0.0

    def prepare(self, run: Run) -> EDMPlan:
        sde = run.sde
        m, s = sde.marginal(run.grid)
        sig, m = (s / m).tolist(), m.tolist()
        m_T, s_T = (float(v) for v in sde.marginal(torch.tensor(sde.T, dtype=torch.float64)))
        levels = []
        for k in range(run.steps):
            sig_hat = sig[k] * (1 + self.gamma(sig[k], run.steps))
            if self.cap_sigma_hat:
                sig_hat = min(sig_hat, s_T / m_T)
            if sig_hat == sig[k]:
                level = HeunLevel(m[k], sig[k], sig[k], run.t[k], m[k], sig[k] * m[k])
            elif sig_hat >= s_T / m_T:  # above the SDE's range: k-diffusion's convention
                m_in = _m_above(sig_hat, m_T, s_T)
                level = HeunLevel(m[k], sig[k], sig_hat, run.t[0], m_in, s_T)
            else:
                th = float(sde.t_from_sigma(torch.tensor(sig_hat, dtype=torch.float64)))
                mh, sh = (float(v) for v in sde.marginal(torch.tensor(th, dtype=torch.float64)))
                t_row = run.t[k].new_full(run.t[k].shape, th)
                level = HeunLevel(m[k], sig[k], sh / mh, t_row, mh, sh)
            levels.append(level)
        return EDMPlan(levels, sig, m, Predictor(run))

    def _eps(
        self, xs: Tensor, t: Tensor, m_eval: float, s_eval: float, predict: Predictor
    ) -> Tensor:
        """eps_hat = (x~ - D(x~; sigma)) / sigma, from the network at input m_eval x~."""
        return predict.eps(xs * m_eval, t, s_eval)

    def step(self, x: Tensor, k: int, run: Run, plan: EDMPlan, to_data: bool = False) -> Tensor:
        sig, m, predict = plan.sigma, plan.m, plan.predict
        lv = plan.levels[k]
        xs = x / lv.m  # scaled state x~
        if lv.sig_hat > lv.sig:
            churn = math.sqrt(lv.sig_hat**2 - lv.sig**2) * self.s_noise
            xs.add_(run.noise.normal(), alpha=churn)
        d = self._eps(xs, lv.t_eval, lv.m_eval, lv.s_eval, predict)
        sig_next, m_next = (0.0, 1.0) if to_data else (sig[k + 1], m[k + 1])
        dsig = sig_next - lv.sig_hat
        x_next = xs + d * dsig
        if sig_next == 0:  # Euler to sigma = 0: x_next = D(x^; sigma^)
            return x_next.mul_(m_next)
        d2 = self._eps(x_next, run.t[k + 1], m_next, sig_next * m_next, predict)
        return (xs + (d + d2) * (0.5 * dsig)).mul_(m_next)

    def final_step(self, x: Tensor, k: int, run: Run, plan: EDMPlan) -> Tensor:
        """EDM's last step, churn included; with ``run.denoise`` it always ends at sigma = 0."""
        return self.step(x, k, run, plan, to_data=run.denoise)

    def describe(self) -> str:
        if not self.stochastic:
            return self.name
        cap = ", capped" if self.cap_sigma_hat else ""
        return (
            f"{self.name}(churn={self.s_churn:g}, tmin={self.s_tmin:g}, tmax={self.s_tmax:g}{cap})"
        )
