"""SDE-DPM-Solver++ (Lu et al. 2022b, App. D): the multistep DPM-Solver++ of the reverse SDE.

``exponential_toolkit`` has the lambda-time setting; the class docstring has the update.
"""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

from scoresde.solvers.base import Run, Solver
from scoresde.solvers.exponential_toolkit import (
    LambdaGrid,
    MultistepPlan,
    check_order,
    check_solver_type,
    combine,
    library_weights,
    phi,
    taylor_weights,
)


class SDEDPMSolverPP(Solver):
    """SDE-DPM-Solver++ (Lu et al. 2022b, App. D; orders 1-3), data prediction, stochastic.

    The reverse SDE's exact solution in lambda, with x0 expanded in a Taylor series:
    x_t = (sigma_t/sigma_s) e^(-h) x_s + alpha_t sum_k c_k D^(k) + sigma_t sqrt(1 - e^(-2h)) z,
    c_k = integral_0^h 2 e^(2(u-h)) u^k/k! du:
        c_0 = 1 - e^(-2h),  c_1 = h - (1 - e^(-2h))/2,  c_2 = 2 h^3 phi_3(-2h),
    D^(k) from the previous steps' predictions. Order 1 on consecutive DDPM timesteps is
    ancestral sampling with the posterior variance. ``solver_type`` "heun"/"midpoint" are
    diffusers' ``sde-dpmsolver++`` (orders 1-2) and k-diffusion's ``sample_dpmpp_2m_sde``
    (midpoint by default) and ``sample_dpmpp_3m_sde`` ("heun"), which keep half of the f''
    term at third order (see ``library_weights``).
    """

    name = "sde_dpm_solver++"
    family = "exponential"
    stochastic = True
    pathwise_limit = "reverse_sde"

    def __init__(self, order: int = 2, solver_type: str = "taylor") -> None:
        self.order = check_order(order, 3)
        self.solver_type = check_solver_type(solver_type)

    def prepare(self, run: Run) -> MultistepPlan:
        return MultistepPlan.of(run, LambdaGrid.of(run.sde, run.grid), self.order)

    def step(self, x: Tensor, k: int, run: Run, plan: MultistepPlan) -> Tensor:
        g, history = plan.grid, plan.history
        d = plan.predict.x0(x, run.t[k], g.alpha[k], g.sigma[k])
        history.push(d)
        h = g.lam[k + 1] - g.lam[k]  # inf on the last step when sigma_0 = 0
        one_m = -math.expm1(-2 * h)  # 1 - e^(-2h)
        last = run.is_last(k)  # own step to t = 0 (denoise=False): first order, no noise
        q = 1 if last else min(self.order, len(history))
        a_t = g.alpha[k + 1]
        c = [a_t * one_m]
        if q > 1:
            c += [a_t * (h - one_m / 2), a_t * 2 * h**3 * phi(3, -2 * h)][: q - 1]
        if self.solver_type != "taylor":
            c = library_weights(c, h, self.solver_type)
        w = np.asarray(c) @ taylor_weights([g.lam[k - j] for j in range(q)], q)
        cx = g.sigma[k + 1] / g.sigma[k] * math.exp(-h)
        out = combine(x, cx, list(zip(w.tolist(), history.items, strict=False)))
        if last:
            return out
        z = run.noise(run.times[k], run.times[k + 1])
        return out.add_(z, alpha=g.sigma[k + 1] * math.sqrt(one_m))

    def describe(self) -> str:
        kind = "" if self.solver_type == "taylor" else f", {self.solver_type}"
        return f"{self.name}(order={self.order}{kind})"
