"""Sampling from a path with zero terminal SNR, m(T) = 0, handled once for every solver.

At m(T) = 0 (rectified flow, the cosine path, a DDPM table rescaled as in Lin et al. 2024) the
log-SNR is -inf and the SDE's coefficients f = m'/m and g^2 are infinite: x_T ~ N(0, s(T)^2 I)
carries nothing of x_0, and E[x_0 | x_T] is the data mean. No solver's own first step is
defined there, but all of them have the same limit, which is taken here, and the solver then
runs on the rest of the grid from t_1.

The limit step T -> t_1. Every exponential integrator's first step is DDIM's (order 1; the
multistep methods warm up with it): in data-prediction form, with e^(-h) = (alpha_T sigma_1) /
(alpha_1 sigma_T),

    x_1 = (sigma_1 / sigma_T) x_T + alpha_1 (1 - e^(-h)) x0_hat(x_T, T).

As alpha_T -> 0, h -> infinity and e^(-h) -> 0, so the step becomes

    x_1 = m(t_1) x0_hat(x_T, T) + s(t_1) eps_hat,   eps_hat = x_T / s(T)      (deterministic)

(the noise-prediction form, x_1 = (alpha_1/alpha_T)(x_T - sigma_T eps) + sigma_1 eps, has the
same limit). A stochastic solver follows the reverse SDE, whose diffusion is infinite at T, so
it forgets x_T: its limit is the posterior draw q(x_1 | x_T, x_0 = x0_hat) = N(m(t_1) x0_hat,
s(t_1)^2 I), taken with the solver's own noise for the step, z = noise(T, t_1):

    x_1 = m(t_1) x0_hat(x_T, T) + s(t_1) z                                     (stochastic)

x0_hat at T must come from the model itself: x0 = (x - s eps) / m is 0/0 there, so an eps or
score network cannot start such a path; x0, v and flow networks (``Score.predicts_x0_everywhere``)
and exact targets (``ExactScore``) can. The step costs one evaluation. Its error is
O(m(t_1)^2) (on Gaussian data N(mu, v I): (sqrt(m_1^2 v + s_1^2) - s_1) |eps| ~ m_1^2 v / (2 s_1)),
which would cap a solver of order p > 2 at order 2.

For those (deterministic, fixed grid, order > 2) the step is corrected. In data prediction
the exact flow is x_1 = sigma_1 (x_T / sigma_T + integral_(-inf)^(lambda_1) e^lambda x0(lambda)
d lambda), and x0 along the flow is smooth in e^lambda = m/s (x0 = a + b e^lambda + O(e^(2
lambda)); on Gaussian data the next term is O(e^(3 lambda))). The trapezoid rule in e^lambda,
with x0_hat at T and at the predicted x_1, integrates the first two terms exactly:

    x_1 = (s(t_1) / s(T)) x_T + m(t_1) (x0_hat(x_T, T) + x0_hat(x_1_pred, t_1)) / 2

at the cost of one evaluation more. Adaptive solvers take the uncorrected step to the time
where m = ``ADAPTIVE_START_MEAN`` and integrate from there.

Two exceptions. A grid that starts below T, where m(t_0) > 0 (diffusers' DPM-Solver and UniPC
with flow sigmas start at sigma = 0.999 or 1 - 1e-6), needs no limit: the solver runs on it as
it is. A solver with ``takes_zero_terminal_step = True`` (``ode_heun``) takes its own first
step from m = 0 and is run on the whole grid.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from scoresde.core.adapters import Score
from scoresde.core.schedules import solve_decreasing
from scoresde.core.sde import SDE
from scoresde.solvers.base import Run, Solver, StepCallback, affine
from scoresde.solvers.plan_scalars import Scalar, is_traced

# where adaptive solvers start after the limit step: its error there is ~ m^2 / 2 = 5e-9
ADAPTIVE_START_MEAN = 1e-4


def adaptive_start_time(sde: SDE) -> float:
    """The time where m(t) = ADAPTIVE_START_MEAN (m is decreasing): where adaptive solvers,
    and the likelihood's ODE, meet the limit step of a zero-SNR path."""
    target = torch.tensor(ADAPTIVE_START_MEAN, dtype=torch.float64)
    return float(solve_decreasing(lambda t: sde.marginal(t)[0], target, 0.0, sde.T))


def ode_end(sde: SDE) -> float:
    """The last time where the probability-flow ODE's coefficients are finite: T, or on a
    zero-SNR path the time where m = ADAPTIVE_START_MEAN (where the likelihood's ODE ends and
    the span of a tuned grid starts)."""
    return adaptive_start_time(sde) if sde.reaches_zero_snr() else sde.T


def is_zero_terminal(sde: SDE) -> bool:
    """True when the path reaches m(T) = 0 (zero terminal SNR): ``SDE.reaches_zero_snr``."""
    return sde.reaches_zero_snr()


def for_path(solver: Solver, sde: SDE) -> Solver:
    """The solver ``sample`` runs on ``sde``: ``solver`` itself, or on a path with m(T) = 0
    wrapped in ``ZeroTerminalStart`` (its ``planned_nfe`` then counts the limit step)."""
    return ZeroTerminalStart(solver) if is_zero_terminal(sde) else solver


def predicts_x0_at_zero_snr(score: Any) -> bool:
    """Whether ``score`` can give x0_hat where m = 0: a ``Score`` of an x0, v or flow network,
    or another object with an ``x0(x, t)`` method (``ExactScore``)."""
    if isinstance(score, Score):
        return score.predicts_x0_everywhere
    return callable(getattr(score, "x0", None))


def check_zero_terminal_model(score: Any) -> None:
    """A ValueError unless ``score`` can start a path with m(T) = 0 (see the module doc)."""
    if not predicts_x0_at_zero_snr(score):
        kind = f"an {score.prediction}-network" if isinstance(score, Score) else "a score function"
        raise ValueError(
            f"score: this path reaches m(T) = 0 (zero terminal SNR), where x0 = (x - s eps) / m "
            f"is undefined, and {kind} cannot give x0 there. Use a v-, x0- or flow-prediction "
            "network (score_from_v, score_from_x0, score_from_flow) or an object with an "
            "x0(x, t) method"
        )


class ZeroTerminalStart(Solver):
    """``solver`` on a path with m(T) = 0: the limit step T -> t_1 (module doc), then
    ``solver`` itself from t_1 on the rest of the grid. Costs one evaluation more than the
    solver's own run on that rest."""

    def __init__(self, solver: Solver) -> None:
        self.solver = solver

    # what the wrapped solver is, it still is
    @property
    def name(self) -> str:  # type: ignore[override]
        return self.solver.name

    @property
    def family(self) -> str:  # type: ignore[override]
        return self.solver.family

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.solver.stochastic

    @property
    def order(self) -> float:  # type: ignore[override]
        return self.solver.order

    @property
    def adaptive(self) -> bool:  # type: ignore[override]
        return self.solver.adaptive

    @property
    def evals_per_step(self) -> int:  # type: ignore[override]
        return self.solver.evals_per_step

    @property
    def pathwise_limit(self) -> str | None:
        return self.solver.pathwise_limit

    @property
    def batch_coupled(self) -> bool:
        return self.solver.batch_coupled

    @property
    def differentiable_grid(self) -> bool:  # type: ignore[override]
        # the limit step differentiates in its landing time (``_mean_std_at_first_time``)
        return self.solver.differentiable_grid

    @property
    def own_first_step(self) -> bool:
        """Whether the wrapped solver takes its own first step from m = 0 (module doc)."""
        return bool(getattr(self.solver, "takes_zero_terminal_step", False))

    @property
    def corrected(self) -> bool:
        """Whether the limit step takes the trapezoid correction (deterministic fixed-grid
        solvers of order above 2; module doc)."""
        s = self.solver
        return not (s.stochastic or s.adaptive or self.own_first_step) and s.order > 2

    def planned_nfe(self, steps: int) -> int:
        if self.solver.adaptive:
            return -1
        if self.own_first_step:
            return self.solver.planned_nfe(steps)
        first = 2 if self.corrected else 1
        # the rest starts below T, where an analytic first step does not apply
        afs = 1 if getattr(self.solver, "afs", False) and steps > 2 else 0
        return first + afs + (self.solver.planned_nfe(steps - 1) if steps > 1 else 0)

    def first_time(self, run: Run) -> float:
        """t_1: the grid's second point, or for an adaptive solver the time where
        m = ADAPTIVE_START_MEAN (m is decreasing)."""
        if not self.solver.adaptive:
            return run.times[1]
        return adaptive_start_time(run.sde)

    def _mean_std_at_first_time(self, run: Run, t_1: float) -> tuple[Scalar, Scalar]:
        """(m, s) at t_1: floats, or, when the grid is differentiated (``tune_grid``), 0-d
        tensors in the graph of its second point, so that the limit step's landing time is
        tuned too."""
        point = run.points[1]
        if not self.solver.adaptive and is_traced(point):
            return run.sde.marginal(point)
        m_1, s_1 = run.sde.marginal(torch.tensor(t_1, dtype=torch.float64))
        return float(m_1), float(s_1)

    def integrate(self, x: Tensor, run: Run, callback: StepCallback | None = None) -> Tensor:
        m_0 = float(run.sde.marginal(torch.tensor(run.times[0], dtype=torch.float64))[0])
        if m_0 > 0:  # the grid starts below T, where the solver's own steps are defined
            return self.solver.integrate(x, run, callback)
        if run.steps < 2:
            raise ValueError(
                "steps: a path with m(T) = 0 needs at least 2 steps (the limit step from T, "
                "then the solver)"
            )
        if self.own_first_step and not self.solver.adaptive:
            return self.solver.integrate(x, run, callback)
        t_1 = self.first_time(run)
        m_1, s_1 = self._mean_std_at_first_time(run, t_1)
        s_T = float(run.sde.marginal(torch.tensor(run.times[0], dtype=torch.float64))[1])
        x0 = run.score.x0(x, run.t[0])
        if self.solver.stochastic:
            x = affine(x0, run.noise(run.times[0], t_1), m_1, s_1)
        else:
            x_T, x = x, affine(x0, x, m_1, s_1 / s_T)
            if self.corrected:  # trapezoid in e^lambda: x0 at t_1 from the predicted x_1
                x0_1 = run.score.x0(x, run.t[1])
                x = affine(x0 + x0_1, x_T, 0.5 * m_1, s_1 / s_T)
        if self.solver.adaptive:  # the rest starts at t_1 and keeps the grid's eps and 0
            grid = torch.cat([torch.tensor([t_1], dtype=torch.float64), run.grid[-2:]])
            t_rows = [run.t[0].new_full(run.t[0].shape, t_1), *run.t[-2:]]
        else:
            grid, t_rows = run.grid[1:], run.t[1:]
        rest = Run(
            run.sde, run.score, run.noise, grid, t_rows, run.denoise, run.generator, run.stats
        )
        if callback is not None:
            callback(0, t_1, x)
            offset = 1 if not self.solver.adaptive else run.steps - rest.steps

            def shifted(k: int, t: float, y: Tensor) -> None:
                callback(k + offset, t, y)

            return self.solver.integrate(x, rest, shifted)
        return self.solver.integrate(x, rest)

    def describe(self) -> str:
        return self.solver.describe()

    def __repr__(self) -> str:
        return f"ZeroTerminalStart({self.solver!r})"
