"""UniPC (Zhao et al. 2023, arXiv:2302.04867): a multistep predictor with a free corrector.

In lambda = log(alpha / sigma) time, from s to t with h = lambda_t - lambda_s, write the
prediction m (x0 by default, or eps) and C, hh, c_x for the exponential integrator's parts:

    x0:   c_x = sigma_t / sigma_s,  C = alpha_t,  hh = -h
    eps:  c_x = alpha_t / alpha_s,  C = sigma_t,  hh = h

The unified predictor UniP-p reads the predictions m_0 (at s) and m_1 .. m_(p-1) at earlier
points with r_k = (lambda_k - lambda_s) / h < 0, through the differences D_k = (m_k - m_0)/r_k:

    x_t = c_x x_s - C (e^hh - 1) m_0 - C B(h) sum_k rho_k D_k

with B(h) = hh ("bh1") or e^hh - 1 ("bh2"). The weights solve R rho = b on the nodes'
powers, R[i, k] = r_k^i, b_i = hh phi_(i+1)(hh) i! / B(h) (``exponential_toolkit.phi``);
p = 2 uses rho = 1/2 (the h -> 0 limit of b_1, as the reference code does). The corrector
UniC-p recomputes the same step once the prediction m_t at the new point is known (node
r = 1, D = m_t - m_0), with rho from the full p x p system (rho = 1/2 for p = 1). It reuses
that evaluation: the next predictor starts from the corrected x_t but keeps m_t, evaluated at
the uncorrected point, so the corrector costs no network call and lifts the order to p + 1.

The predictor's order warms up from 1 and, with ``lower_order_final``, never exceeds the
number of steps left (the step to t = 0 is first order), as in diffusers'
``UniPCMultistepScheduler``. The last step (eps -> 0) is Tweedie's denoiser by default; it
uses the network at the uncorrected point, so the final correction has no effect on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from scoresde.solvers.base import Run, Solver
from scoresde.solvers.exponential_toolkit import (
    History,
    LambdaGrid,
    Predictor,
    analytic_first_prediction,
    check_afs,
    check_order,
    combine,
    phi,
)
from scoresde.solvers.plan_scalars import Scalar, expm1, matrix, solve

B_FUNCTIONS = ("bh1", "bh2")


@dataclass
class UniPCState:
    """A UniPC run's mutable state, the tensors carried between steps: the predictions at
    x_k, x_(k-1), ... (newest first), the start of the last predictor step and its order."""

    history: History
    x_prev: Tensor | None = None  # the corrected start of the last predictor step
    order_prev: int = 0


@dataclass(frozen=True)
class UniPCPlan:
    """A UniPC run: its constants (the grid, the predictor) and its mutable ``state``."""

    grid: LambdaGrid
    predict: Predictor
    state: UniPCState  # the run's state: updated by every step


class UniPC(Solver):
    """UniPC-p: UniP-p predictor and (``corrector=True``) UniC-p corrector, p = ``order``.

    ``variant`` picks B(h): "bh1" = hh (recommended by the paper for unconditional sampling),
    "bh2" = e^hh - 1 (guided sampling; diffusers' default). ``prediction``: "x0" (data
    prediction, diffusers' ``predict_x0=True``) or "eps". One network call per step;
    ``afs=True`` takes the first prediction analytically
    (``exponential_toolkit.analytic_first_prediction``), one evaluation less.
    """

    name = "unipc"
    family = "exponential"
    differentiable_grid = True

    def __init__(
        self,
        order: int = 2,
        variant: str = "bh2",
        prediction: str = "x0",
        corrector: bool = True,
        lower_order_final: bool = True,
        afs: bool = False,
    ) -> None:
        self.order = check_order(order, 3)
        self.afs = check_afs(afs)
        if variant not in B_FUNCTIONS:
            raise ValueError(f"variant must be one of {', '.join(B_FUNCTIONS)}, got {variant!r}")
        if prediction not in ("x0", "eps"):
            raise ValueError(f"prediction must be 'x0' or 'eps', got {prediction!r}")
        self.variant, self.prediction = variant, prediction
        self.corrector = bool(corrector)
        self.lower_order_final = bool(lower_order_final)

    def prepare(self, run: Run) -> UniPCPlan:
        grid = LambdaGrid.of(run.sde, run.grid)
        return UniPCPlan(grid, Predictor(run), UniPCState(History(self.order)))

    def _parts(self, g: LambdaGrid, s: int, t: int) -> tuple[Scalar, Scalar, Scalar, Scalar]:
        """(c_x, C, hh, B(h)) for the step from grid point s to t."""
        h = g.lam[t] - g.lam[s]
        if self.prediction == "x0":
            cx, c, hh = g.sigma[t] / g.sigma[s], g.alpha[t], -h
        else:
            cx, c, hh = g.alpha[t] / g.alpha[s], g.sigma[t], h
        return cx, c, hh, (hh if self.variant == "bh1" else expm1(hh))

    def weights(
        self, g: LambdaGrid, s: int, t: int, p: int, corrector: bool
    ) -> tuple[Scalar, list[Scalar]]:
        """(c_x, weights on [m_t (corrector only), m_s, m_(s-1), ..., m_(s-p+1)])."""
        cx, c, hh, b_h = self._parts(g, s, t)
        h = g.lam[t] - g.lam[s]
        r = [(g.lam[s - k] - g.lam[s]) / h for k in range(1, p)]
        if corrector:
            r.append(1.0)
        n = len(r)
        if n == 0:
            rho = []
        elif n == 1 and (p == 2 or (corrector and p == 1)):
            rho = [0.5]
        else:
            mat = matrix([[rk**i for rk in r] for i in range(n)])
            rho = solve(mat, [hh * phi(i + 2, hh) * math.factorial(i + 1) / b_h for i in range(n)])
        # -C [(e^hh - 1) m_s + B sum_k rho_k (m_k - m_s) / r_k]
        w_k = [-c * b_h * rk_rho / rk for rk_rho, rk in zip(rho, r, strict=True)]
        w_s = -c * expm1(hh) - sum(w_k)
        if corrector:  # the new point (r = 1) goes first
            return cx, [w_k[-1], w_s, *w_k[:-1]]
        return cx, [w_s, *w_k]

    def step_order(self, k: int, run: Run) -> int:
        q = min(self.order, k + 1)
        if self.lower_order_final:
            q = min(q, run.steps - k)
        return q

    def planned_nfe(self, steps: int) -> int:
        return steps - 1 if self.afs and steps > 1 else steps

    def step(self, x: Tensor, k: int, run: Run, plan: UniPCPlan) -> Tensor:
        g, state = plan.grid, plan.state
        if k == 0 and self.afs and run.times[0] == run.sde.T:  # analytic first step
            m = analytic_first_prediction(self.prediction, x, g.alpha[0], g.sigma[0])
        else:
            m = plan.predict(self.prediction, x, run.t[k], g.alpha[k], g.sigma[k])
        if self.corrector and state.x_prev is not None:
            cx, w = self.weights(g, k - 1, k, state.order_prev, corrector=True)
            x = combine(state.x_prev, cx, list(zip(w, [m, *state.history.items], strict=False)))
        state.history.push(m)
        if run.is_last(k):  # own step to t = 0 (denoise=False): first order
            cx, cf = g.first_order(self.prediction, k)
            return combine(x, cx, [(cf, m)])
        q = self.step_order(k, run)
        state.x_prev, state.order_prev = x, q
        cx, w = self.weights(g, k, k + 1, q, corrector=False)
        return combine(x, cx, list(zip(w, state.history.items, strict=False)))

    def describe(self) -> str:
        extra = ("" if self.corrector else ", corrector=False") + (", afs" if self.afs else "")
        return f"{self.name}(order={self.order}, {self.variant}, {self.prediction}{extra})"
