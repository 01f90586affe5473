"""k-diffusion's ancestral samplers, for any SDE here: Euler ancestral and DPM-Solver++(2S)
ancestral.

Both work in the scaled state x~ = x / m(t) at noise level sigma~ = s(t) / m(t) (EDM's view;
x~ = x on VE). An ancestral step from sigma to sigma_next first moves deterministically to

    sigma_down = sqrt(sigma_next^2 - sigma_up^2),
    sigma_up   = min(sigma_next, eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2))

and then adds sigma_up z, so that x~ at sigma_next has the right marginal variance. With
eta = 1, sigma_up is the std of the DDPM posterior q(x_next | x, x0) (Ho et al.), eta = 0 is
the deterministic sampler. The last step (sigma_next = 0) adds no noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from scoresde.solvers.base import Run, Solver
from scoresde.solvers.ddim import DDIM
from scoresde.solvers.exponential_toolkit import Predictor, check_eta


class EulerAncestral(DDIM):
    """k-diffusion's ``sample_euler_ancestral`` / diffusers' ``EulerAncestralDiscreteScheduler``.

    x~ <- x~ + (sigma_down - sigma) (x~ - D(x~; sigma)) / sigma + sigma_up z. In VP variables
    this is exactly DDIM(eta) (Song et al. 2021, eq. 12): both keep x0_hat, move the noise
    prediction to sigma_down and add eta times the posterior std, so this class is DDIM with
    k-diffusion's default eta = 1. The parity tests check it against both libraries.
    """

    name = "euler_ancestral"
    family = "SDE"

    def __init__(self, eta: float = 1.0) -> None:
        super().__init__(eta)


def ancestral_levels(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up) of an ancestral step (module doc); sigma > sigma_next >= 0."""
    if sigma_next == 0.0 or eta == 0.0:
        return sigma_next, 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - up**2), up


@dataclass(frozen=True)
class Step2S:
    """One step's constants (k < N - 1): levels, midpoint, and the scales m at both ends."""

    m: float  # m(t_k)
    sig: float
    sig_down: float
    sig_up: float
    sig_mid: float  # sqrt(sigma sigma_down): the midpoint in lambda = -log sigma
    t_mid: Tensor  # (B,) time of the midpoint evaluation
    m_mid: float
    m_next: float


@dataclass(frozen=True)
class Ancestral2SPlan:
    """DPM-Solver++(2S) ancestral's constants: ``Step2S`` per step but the last, and at the
    grid points sigma~_k = s(t_k)/m(t_k) (``sigma``) and m(t_k) (``m``). No run state."""

    steps: list[Step2S]
    sigma: list[float]
    m: list[float]
    predict: Predictor


class DPMSolverPP2SAncestral(Solver):
    """DPM-Solver++(2S) ancestral: k-diffusion's ``sample_dpmpp_2s_ancestral``.

    With D the x0 prediction and lambda = -log sigma~, h = lambda_down - lambda, one step is
    the singlestep second-order DPM-Solver++ (Lu et al. 2022b, Alg. 1, r = 1/2) to sigma_down:

        u = (sigma_mid / sigma) x~ - expm1(-h/2) D(x~; sigma),  sigma_mid = sqrt(sigma sigma_down)
        x~ <- (sigma_down / sigma) x~ - expm1(-h) D(u; sigma_mid)

    then x~ += sigma_up z. The midpoint is evaluated at the time with s/m = sigma_mid.
    NFE = 2 per step, 1 on the last (sigma_next = 0 gives x~ = D).
    """

    name = "dpm_solver++_2s_ancestral"
    family = "SDE"
    evals_per_step = 2
    order = 2.0

    def __init__(self, eta: float = 1.0) -> None:
        self.eta = check_eta(eta)
        self.stochastic = self.eta > 0

    @property
    def pathwise_limit(self) -> str | None:
        return {0.0: "ode", 1.0: "reverse_sde"}.get(self.eta)

    def planned_nfe(self, steps: int) -> int:
        return 2 * (steps - 1) + 1

    def prepare(self, run: Run) -> Ancestral2SPlan:
        sde = run.sde
        m, s = sde.marginal(run.grid)
        sig, m = (s / m).tolist(), m.tolist()
        steps = []
        for k in range(run.steps - 1):
            down, up = ancestral_levels(sig[k], sig[k + 1], self.eta)
            mid = math.sqrt(sig[k] * down)
            t_mid = float(sde.t_from_sigma(torch.tensor(mid, dtype=torch.float64)))
            m_mid = float(sde.marginal(torch.tensor(t_mid, dtype=torch.float64))[0])
            t_row = run.t[k].new_full(run.t[k].shape, t_mid)
            steps.append(Step2S(m[k], sig[k], down, up, mid, t_row, m_mid, m[k + 1]))
        return Ancestral2SPlan(steps, sig, m, Predictor(run))

    def step(self, x: Tensor, k: int, run: Run, plan: Ancestral2SPlan) -> Tensor:
        sig, m, predict = plan.sigma, plan.m, plan.predict
        if run.is_last(k):  # own step to t = 0: Euler in sigma~, ending at sigma~(0)
            d = predict.x0(x, run.t[k], m[k], sig[k] * m[k])
            r = sig[k + 1] / sig[k]
            return (x / m[k] * r).add_(d, alpha=1 - r).mul_(m[k + 1])
        st = plan.steps[k]
        xs = x / st.m
        d = predict.x0(x, run.t[k], st.m, st.sig * st.m)
        h = math.log(st.sig / st.sig_down)
        u = (xs * (st.sig_mid / st.sig)).add_(d, alpha=-math.expm1(-h / 2))
        d2 = predict.x0(u * st.m_mid, st.t_mid, st.m_mid, st.sig_mid * st.m_mid)
        out = (xs * (st.sig_down / st.sig)).add_(d2, alpha=-math.expm1(-h))
        if st.sig_up > 0:
            out.add_(run.noise(run.times[k], run.times[k + 1]), alpha=st.sig_up)
        return out.mul_(st.m_next)

    def describe(self) -> str:
        return f"{self.name}(eta={self.eta:g})"
