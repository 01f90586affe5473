"""The solver contract shared by every sampler, and the run state the driver hands it.

A solver is a stateless object. ``sample`` builds a ``Run`` (the SDE, the counted score, the
noise source, the time grid and per-step time tensors) and calls

    plan = solver.prepare(run)            once: per-step constants, computed in float64
    x    = solver.step(x, k, run, plan)   for k = 0 .. N-1: from t_k to t_{k+1}

or, for solvers that drive their own loop (adaptive, torchsde), ``solver.integrate``. A plan
is a small dataclass of the run's constants; a multistep method's memory of earlier
predictions is one explicit state field of its plan (``exponential_toolkit.History``), made
fresh by every ``prepare``, so the solver object itself stays stateless. Solvers declare what
they are (``family``, ``stochastic``, ``evals_per_step``, ``order``), never touch networks,
and never read tensor values on the host inside the loop.

The last step (eps -> 0) never adds noise; with ``run.denoise`` it is Tweedie's denoiser
x0_hat = (x + s(eps)^2 score) / m(eps) instead of the solver's own update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from scoresde.core.noise import NoiseSource
from scoresde.core.sde import SDE
from scoresde.solvers.plan_scalars import Scalar, is_traced, scalars

ScoreFn = Callable[[Tensor, Tensor], Tensor]
StepCallback = Callable[[int, float, Tensor], None]


@dataclass
class Run:
    """Everything a solver may read during one sampling run."""

    sde: SDE
    score: ScoreFn  # counted: every call is one function evaluation
    noise: NoiseSource
    grid: Tensor  # (N + 1,) float64 CPU, T .. eps, 0
    t: list[Tensor]  # N + 1 per-sample (B,) time tensors on the sample's device and dtype
    denoise: bool
    generator: torch.Generator
    stats: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.times: list[float] = self.grid.tolist()
        # the grid as plan scalars: the floats above, or 0-d tensors in the autograd graph
        # when the grid is differentiated (``plan_scalars``)
        self.points: list[Scalar] = scalars(self.grid)
        self.steps = len(self.times) - 1
        self.eps = self.times[-2]

    def is_last(self, k: int) -> bool:
        return k == self.steps - 1


class NonFiniteSampleError(FloatingPointError):
    """Raised when NaN or Inf appears during sampling; names the step and time."""


def affine(x: Tensor, s: Tensor, a: Scalar, b: Scalar) -> Tensor:
    """a x + b s in two kernels, into a new tensor (neither x nor s is modified); out of
    place when a coefficient is a traced plan scalar (``plan_scalars``)."""
    if is_traced(a, b):
        return x * a + s * b
    return s.mul(b).add_(x, alpha=a)


def tweedie_coefficients(sde: SDE, t: Scalar) -> tuple[Scalar, Scalar]:
    """(1/m, s^2/m) at time t: x0_hat = x/m + (s^2/m) score; floats for a float t, 0-d
    tensors in the graph for a traced one."""
    if isinstance(t, Tensor):
        m, s = sde.marginal(t)
        return 1 / m, s * s / m
    m, s = sde.marginal(torch.tensor(t, dtype=torch.float64))
    return float(1 / m), float(s * s / m)


def tweedie_step(x: Tensor, run: Run) -> Tensor:
    """The final denoiser at eps: x0_hat = (x + s(eps)^2 score(x, eps)) / m(eps)."""
    coefficients = tweedie_coefficients(run.sde, run.points[-2])
    return affine(x, run.score(x, run.t[-2]), *coefficients)


class Solver:
    """Base class. Subclasses set the class attributes and implement ``prepare`` and ``step``."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = "other"  # "SDE", "ODE" or "exponential" (reports group by it)
    stochastic: ClassVar[bool] = False
    evals_per_step: ClassVar[int] = 1
    order: ClassVar[float] = 1.0
    adaptive: ClassVar[bool] = False
    # its plan is written in plan scalars, so samples differentiate through the time grid
    differentiable_grid: ClassVar[bool] = False

    @property
    def pathwise_limit(self) -> str | None:
        """What this solver converges to sample by sample as its steps shrink, from the same
        x_T and, if stochastic, the same Brownian path (read only through ``run.noise(t,
        t_next)``): "ode" (the probability-flow ODE), "reverse_sde" (the reverse SDE
        dx = [f - g^2 s] dt + g dW), or None when its other randomness (Langevin noise, a
        Brownian path of its own) has no pathwise limit. ``compare`` measures coupled errors
        against a converged run of this limit."""
        return None if self.stochastic else "ode"

    @property
    def batch_coupled(self) -> bool:
        """True when a sample's update reads other samples of its batch (batch statistics)."""
        return False

    def prepare(self, run: Run) -> Any:
        return None

    def step(self, x: Tensor, k: int, run: Run, plan: Any) -> Tensor:
        raise NotImplementedError

    def final_step(self, x: Tensor, k: int, run: Run, plan: Any) -> Tensor:
        """The step eps -> 0: Tweedie's denoiser with ``run.denoise``, else the solver's own
        noise-free step (subclasses whose own step needs care at t = 0 override this)."""
        return tweedie_step(x, run) if run.denoise else self.step(x, k, run, plan)

    def planned_nfe(self, steps: int) -> int:
        """Score evaluations for a run of ``steps`` steps (the last step included)."""
        return self.evals_per_step * steps

    def steps_for_nfe(self, nfe: int) -> int:
        """The largest step count whose ``planned_nfe`` fits in ``nfe`` (0 if none does);
        ``planned_nfe`` grows with the steps, so a bisection finds it."""
        lo, hi = 0, max(1, nfe)  # planned_nfe(lo) fits (or lo = 0); find the last that does
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.planned_nfe(mid) <= nfe:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def integrate(self, x: Tensor, run: Run, callback: StepCallback | None = None) -> Tensor:
        plan = self.prepare(run)
        for k in range(run.steps):
            x = self.final_step(x, k, run, plan) if run.is_last(k) else self.step(x, k, run, plan)
            if callback is not None:
                callback(k, run.times[k + 1], x)
        return x

    def describe(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class AffineSolver(Solver):
    """A one-evaluation solver whose step is x_next = a x + b score(x, t) + c z.

    Subclasses give the three coefficients as float64 functions of the grid in
    ``coefficients(sde, t, t_next)``: that is where each method's maths lives. The step itself
    is three fused kernels and a noise draw. When the score is an eps-adapter, b s is applied
    as (-b / s(t)) eps with the network's raw eps, which saves the adapter's per-step s(t).
    """

    def coefficients(self, sde: SDE, t: Tensor, t_next: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError

    @property
    def differentiable_grid(self) -> bool:  # type: ignore[override]
        """Deterministic ones only: a stochastic step's noise increments are drawn at the
        grid's host times, outside the graph."""
        return not self.stochastic

    def prepare(self, run: Run) -> tuple[list[tuple[Scalar, Scalar, Scalar]], ScoreFn]:
        a, b, c = self.coefficients(run.sde, run.grid[:-1], run.grid[1:])
        c = torch.as_tensor(c, dtype=torch.float64).expand_as(run.grid[:-1]).clone()
        c[-1] = 0.0  # no noise on the last step
        model = run.score
        min_std = getattr(run.score, "eps_min_std", None)
        if min_std is not None:  # score = -eps / s(t), s clamped as in the adapter
            b = -b / run.sde.marginal(run.grid[:-1])[1].clamp_min(min_std)
            model = run.score.eps
        return list(zip(scalars(a), scalars(b), scalars(c), strict=True)), model

    def step(self, x: Tensor, k: int, run: Run, plan) -> Tensor:
        rows, model = plan
        a, b, c = rows[k]
        x_next = affine(x, model(x, run.t[k]), a, b)
        if c != 0.0:
            z = run.noise(run.times[k], run.times[k + 1])
            x_next = x_next + z * c if is_traced(c) else x_next.add_(z, alpha=c)
        return x_next
