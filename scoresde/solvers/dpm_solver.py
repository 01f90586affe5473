"""Multistep DPM-Solver (noise prediction) and DPM-Solver++ (data prediction), orders 1-3, and
their base ``ExponentialMultistep`` (which DEIS also builds on).

One evaluation per step: from t_k to t_(k+1), h = lambda_(k+1) - lambda_k,

    x0:   x_(k+1) = (sigma_(k+1)/sigma_k) x_k + alpha_(k+1) sum_j h^(j+1) phi_(j+1)(-h) D^(j)
    eps:  x_(k+1) = (alpha_(k+1)/alpha_k) x_k - sigma_(k+1) sum_j h^(j+1) phi_(j+1)(h) eps^(j)

with the lambda-derivatives f^(j) of the polynomial through the last q predictions
(``taylor_weights``); see ``exponential_toolkit`` for the derivation and the last step.
"""

from __future__ import annotations

from torch import Tensor

from scoresde.solvers.base import Run, Solver
from scoresde.solvers.exponential_toolkit import (
    LambdaGrid,
    MultistepPlan,
    analytic_first_prediction,
    check_afs,
    check_order,
    check_solver_type,
    combine,
    library_weights,
    phi,
    taylor_weights,
)
from scoresde.solvers.plan_scalars import Scalar, row_times


class ExponentialMultistep(Solver):
    """Multistep exponential integrator of order 1..3 in the ``prediction`` ("x0" or "eps");
    one evaluation per step. Its plan is a ``MultistepPlan``: the ``LambdaGrid`` from
    ``lambda_grid`` and the history of the last ``order`` predictions."""

    family = "exponential"
    prediction = "x0"
    differentiable_grid = True

    def __init__(
        self,
        order: int = 2,
        lower_order_final: bool = True,
        solver_type: str = "taylor",
        afs: bool = False,
    ) -> None:
        self.order = check_order(order, 3)
        self.lower_order_final = bool(lower_order_final)
        self.solver_type = check_solver_type(solver_type)
        self.afs = check_afs(afs)

    def planned_nfe(self, steps: int) -> int:
        return steps - 1 if self.afs and steps > 1 else steps

    def lambda_grid(self, run: Run) -> LambdaGrid:
        """The grid the coefficients read (subclasses may add per-point constants)."""
        return LambdaGrid.of(run.sde, run.grid)

    def prepare(self, run: Run) -> MultistepPlan:
        return MultistepPlan.of(run, self.lambda_grid(run), self.order)

    def step_order(self, k: int, run: Run) -> int:
        """Warm-up from order 1; with few steps, also lower orders on the final steps.

        "taylor" (Lu et al.'s reference code): with fewer than 15 steps, the last exponential
        step is first order and the one before at most second. "heun"/"midpoint" (diffusers):
        only the step to t = 0 is first order, and the one before it at most second.
        """
        q = min(self.order, k + 1)
        exp_steps = run.steps - 1  # exponential steps T -> eps (the last step is the denoiser)
        if self.lower_order_final and run.steps < 15:
            q = min(q, exp_steps - k + (self.solver_type != "taylor"))
        return max(q, 1)

    def coefficients(self, g: LambdaGrid, k: int, q: int) -> tuple[Scalar, list[Scalar]]:
        """(c_x, weights on the last q predictions, newest first) for the step k -> k+1:
        c_j = alpha_(k+1) h^(j+1) phi_(j+1)(-h) (x0) or -sigma_(k+1) h^(j+1) phi_(j+1)(h) (eps),
        times ``taylor_weights`` of the last q lambdas."""
        h = g.lam[k + 1] - g.lam[k]
        lams = [g.lam[k - j] for j in range(q)]
        w = taylor_weights(lams, q)
        if self.prediction == "eps":
            cx = g.alpha[k + 1] / g.alpha[k]
            c = [-g.sigma[k + 1] * h ** (i + 1) * phi(i + 1, h) for i in range(q)]
        else:
            cx = g.sigma[k + 1] / g.sigma[k]
            c = [g.alpha[k + 1] * h ** (i + 1) * phi(i + 1, -h) for i in range(q)]
        if self.solver_type != "taylor":
            c = library_weights(c, h, self.solver_type)
        return cx, row_times(c, w)

    def step(self, x: Tensor, k: int, run: Run, plan: MultistepPlan) -> Tensor:
        g = plan.grid
        if k == 0 and self.afs and run.times[0] == run.sde.T:
            f = analytic_first_prediction(self.prediction, x, g.alpha[0], g.sigma[0])
        else:
            f = plan.predict(self.prediction, x, run.t[k], g.alpha[k], g.sigma[k])
        plan.history.push(f)
        if run.is_last(k):  # own step to t = 0 (denoise=False): first order
            cx, cf = g.first_order(self.prediction, k)
            return combine(x, cx, [(cf, f)])
        cx, w = self.coefficients(g, k, self.step_order(k, run))
        return combine(x, cx, list(zip(w, plan.history.items, strict=False)))

    def describe(self) -> str:
        kind = "" if self.solver_type == "taylor" else f", {self.solver_type}"
        return f"{self.name}(order={self.order}{kind}{', afs' if self.afs else ''})"


class DPMSolverPP(ExponentialMultistep):
    """DPM-Solver++ (Lu et al. 2022b, arXiv:2211.01095): multistep, data prediction, 2M / 3M.

    x_{i+1} = (sigma_{i+1}/sigma_i) x_i + alpha_{i+1} sum_k h^(k+1) phi_(k+1)(-h) D^(k), with
    D^(k) the lambda-derivatives of the x0 prediction from the last ``order`` steps. Order 1
    is DDIM; the first step warms up at order 1, and with fewer than 15 steps the last steps
    lower their order (``lower_order_final``), as recommended in the paper.

    ``solver_type``: "taylor" (default) is the expansion above. "heun" and "midpoint" are
    diffusers' ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++")`` with that
    ``solver_type`` (k-diffusion's ``sample_dpmpp_2m`` is "midpoint"), their lower-order
    rule included: "heun" equals "taylor" at second order; at third order both keep half of
    the f'' term (see ``library_weights``).
    """

    name = "dpm_solver++"
    family = "exponential"
    prediction = "x0"


class DPMSolverMultistep(ExponentialMultistep):
    """Multistep DPM-Solver (Lu et al. 2022, arXiv:2206.00927, and 2022b App. B), noise prediction.

    x_{i+1} = (alpha_{i+1}/alpha_i) x_i - sigma_{i+1} sum_k h^(k+1) phi_(k+1)(h) eps^(k).
    """

    name = "dpm_solver"
    family = "exponential"
    prediction = "eps"
