"""Singlestep DPM-Solver-1/2/3 (noise prediction, intermediate evaluations) and singlestep
DPM-Solver++ (data prediction, stages on the grid points), orders 1-3.

The formulas are in the classes' docstrings; ``exponential_toolkit`` has the lambda-time
exponential integrator they expand and the first-order last step with ``denoise=False``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from torch import Tensor

from scoresde.solvers.base import Run, Solver
from scoresde.solvers.exponential_toolkit import (
    LambdaGrid,
    Predictor,
    check_order,
    check_solver_type,
    combine,
    library_weights,
    phi,
    taylor_weights,
)


@dataclass(frozen=True)
class Stage:
    """An intermediate point of every step k: t at lambda_k + r h_k, with alpha = m(t),
    sigma = s(t) (host floats) and the (B,) time tensor."""

    alpha: list[float]
    sigma: list[float]
    t: list[Tensor]


@dataclass(frozen=True)
class SinglestepPlan:
    """DPM-Solver-k's constants: the grid, h_k = lambda_(k+1) - lambda_k, the stage ratios r
    ([], [1/2] or [1/3, 2/3]) and one ``Stage`` per ratio. No run state."""

    grid: LambdaGrid
    predict: Predictor
    h: list[float]
    r: list[float]
    stages: list[Stage]


class DPMSolverSinglestep(Solver):
    """Singlestep DPM-Solver-1/2/3 (Lu et al. 2022, Algorithms 1-2), noise prediction.

    Order k spends k evaluations per step at intermediate lambdas (r1 = 1/2 for order 2;
    r1 = 1/3, r2 = 2/3 for order 3):

        u1 = (a_s1/a_s) x - sig_s1 (e^(r1 h) - 1) eps_s
        order 2: x_t = (a_t/a_s) x - sig_t (e^h - 1) eps_s - sig_t/(2 r1) (e^h - 1)(eps(u1) - eps_s)
        order 3: u2 = (a_s2/a_s) x - sig_s2 (e^(r2 h) - 1) eps_s
                      - (sig_s2 r2/r1) ((e^(r2 h) - 1)/(r2 h) - 1) (eps(u1) - eps_s)
                 x_t = (a_t/a_s) x - sig_t (e^h - 1) eps_s
                       - (sig_t/r2) ((e^h - 1)/h - 1) (eps(u2) - eps_s)
    """

    name = "dpm_solver_single"
    family = "exponential"

    def __init__(self, order: int = 3) -> None:
        self.order = check_order(order, 3)
        self.evals_per_step = self.order

    def planned_nfe(self, steps: int) -> int:
        return self.order * (steps - 1) + 1

    def prepare(self, run: Run) -> SinglestepPlan:
        times = run.grid[:-1]
        lam = 0.5 * run.sde.log_snr(times)
        h = lam[1:] - lam[:-1]
        r = {1: [], 2: [0.5], 3: [1 / 3, 2 / 3]}[self.order]
        stages = []
        for ri in r:
            t_mid = run.sde.t_from_log_snr(2 * (lam[:-1] + ri * h)).clamp(run.eps, run.sde.T)
            m, s = run.sde.marginal(t_mid)
            ts = [run.t[0].new_full(run.t[0].shape, v) for v in t_mid.tolist()]
            stages.append(Stage(m.tolist(), s.tolist(), ts))
        grid = LambdaGrid.of(run.sde, run.grid)
        return SinglestepPlan(grid, Predictor(run), h.tolist(), r, stages)

    def step(self, x: Tensor, k: int, run: Run, plan: SinglestepPlan) -> Tensor:
        g, predict, r = plan.grid, plan.predict, plan.r
        e_s = predict.eps(x, run.t[k], g.sigma[k])
        if run.is_last(k):  # own step to t = 0 (denoise=False): first order
            cx, ce = g.first_order("eps", k)
            return combine(x, cx, [(ce, e_s)])
        h, a_s, a_t, sig_t = plan.h[k], g.alpha[k], g.alpha[k + 1], g.sigma[k + 1]
        em1 = math.expm1(h)
        if self.order == 1:
            return combine(x, a_t / a_s, [(-sig_t * em1, e_s)])
        st1 = plan.stages[0]
        m1, s1, t1 = st1.alpha[k], st1.sigma[k], st1.t[k]
        u1 = combine(x, m1 / a_s, [(-s1 * math.expm1(r[0] * h), e_s)])
        d1 = predict.eps(u1, t1, s1).sub_(e_s)
        if self.order == 2:
            return combine(x, a_t / a_s, [(-sig_t * em1, e_s), (-sig_t / (2 * r[0]) * em1, d1)])
        st2 = plan.stages[1]
        m2, s2, t2 = st2.alpha[k], st2.sigma[k], st2.t[k]
        r1, r2 = r
        em2 = math.expm1(r2 * h)
        u2 = combine(x, m2 / a_s, [(-s2 * em2, e_s), (-(s2 * r2 / r1) * (em2 / (r2 * h) - 1), d1)])
        d2 = predict.eps(u2, t2, s2).sub_(e_s)
        return combine(x, a_t / a_s, [(-sig_t * em1, e_s), (-(sig_t / r2) * (em1 / h - 1), d2)])

    def describe(self) -> str:
        return f"{self.name}(order={self.order})"


def singlestep_blocks(steps: int, order: int) -> list[int]:
    """Block lengths of a grid-stage singlestep run: full blocks of ``order`` steps, shorter
    ones at the end (Lu et al.'s reference code and diffusers' ``get_order_list``)."""
    if order == 1:
        return [1] * steps
    full, rest = divmod(steps, order)
    if rest == 0:  # the last block is split into two lower-order ones
        return [order] * (full - 1) + ([2, 1] if order == 3 else [1, 1])
    return [order] * full + [rest]


@dataclass
class Block:
    """A run's mutable state for singlestep DPM-Solver++: the current block's start x_b and
    the predictions D_b, D_(b+1), ... at its stages so far."""

    x: Tensor | None = None
    preds: list[Tensor] = field(default_factory=list)

    def start(self, x: Tensor, d: Tensor) -> None:
        """A new block at x_b = ``x`` with D_b = ``d``."""
        self.x, self.preds = x, [d]

    def add(self, d: Tensor) -> None:
        """The prediction at the block's next stage."""
        self.preds.append(d)


@dataclass(frozen=True)
class BlockPlan:
    """Singlestep DPM-Solver++'s constants (the grid, each step's stage in its block, 0 at a
    block's start) and its mutable ``block``."""

    grid: LambdaGrid
    predict: Predictor
    stage: list[int]
    block: Block  # the run's state: updated by every step


class DPMSolverPPSinglestep(Solver):
    """Singlestep DPM-Solver++ whose stages are the grid points (diffusers'
    ``DPMSolverSinglestepScheduler``, Lu et al. 2022b), data prediction, orders 1-3.

    The grid is cut into blocks (``singlestep_blocks``); a block of length 3 starting at b
    takes its three steps as: first order b -> b+1, second order b -> b+2 from (x_b, D_b,
    D_(b+1)), third order b -> b+3 from (x_b, D_b, D_(b+1), D_(b+2)), each a Taylor step
    expanded at lambda_b, x_t = (sigma_t/sigma_b) x_b + alpha_t sum_k h^(k+1) phi_(k+1)(-h)
    D^(k), with D^(k) the derivatives of the polynomial through the block's predictions (h =
    lambda_t - lambda_b). On a grid uniform in lambda the stages sit at r = 1/2 (order 2) and
    r = 1/3, 2/3 (order 3), DPM-Solver-2/3's. One evaluation per grid step.

    ``solver_type`` "taylor" (= diffusers' "heun") is the expansion above; "midpoint" weights
    the first difference at order 2 by half the first-order weight and, at order 3, keeps
    only the newest stage (Lu et al.'s DPM-Solver-3 update, exact in order for r = 2/3).
    """

    name = "dpm_solver++_single"
    family = "exponential"

    def __init__(self, order: int = 2, solver_type: str = "taylor") -> None:
        self.order = check_order(order, 3)
        self.solver_type = "taylor" if solver_type == "heun" else check_solver_type(solver_type)

    def prepare(self, run: Run) -> BlockPlan:
        stage = [i for n in singlestep_blocks(run.steps, self.order) for i in range(n)]
        return BlockPlan(LambdaGrid.of(run.sde, run.grid), Predictor(run), stage, Block())

    def step(self, x: Tensor, k: int, run: Run, plan: BlockPlan) -> Tensor:
        g, block = plan.grid, plan.block
        d = plan.predict.x0(x, run.t[k], g.alpha[k], g.sigma[k])
        q = plan.stage[k] + 1  # the order of this step; its block started at k - stage[k]
        if q == 1 or run.is_last(k):
            block.start(x, d)
            cx, cd = g.first_order("x0", k)
            return combine(x, cx, [(cd, d)])
        block.add(d)
        b = k - plan.stage[k]
        h = g.lam[k + 1] - g.lam[b]
        c = [g.alpha[k + 1] * h ** (i + 1) * phi(i + 1, -h) for i in range(q)]
        used = list(range(q))  # stages of the block the update reads
        if self.solver_type == "midpoint" and q == 3:
            used, c = [0, 2], c[:2]
        elif self.solver_type == "midpoint":
            c = library_weights(c, h, "midpoint")
        w = np.asarray(c) @ taylor_weights([g.lam[b + i] for i in used], len(used))
        terms = [(wi, block.preds[i]) for wi, i in zip(w.tolist(), used, strict=True)]
        return combine(block.x, g.sigma[k + 1] / g.sigma[b], terms)

    def describe(self) -> str:
        kind = "" if self.solver_type == "taylor" else f", {self.solver_type}"
        return f"{self.name}(order={self.order}{kind})"
