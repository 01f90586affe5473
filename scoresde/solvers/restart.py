"""Restart sampling (Xu et al. 2023, arXiv:2306.14878): ODE steps with forward re-noising.

The main run is EDM's Heun on the run's grid (``edm_heun`` without churn). When it reaches
t_min, the interior grid point whose noise level sigma = s(t)/m(t) is nearest to
``sigma_min`` (in log) among those below ``sigma_max``, it restarts K = ``restarts`` times:
jump forward to t_max (sigma(t_max) = ``sigma_max``) with the SDE's exact transition,

    x_(t_max) = r x_(t_min) + sqrt(w) z,   r = m(t_max)/m(t_min),
    w = s(t_max)^2 - r^2 s(t_min)^2,

and integrate the probability-flow ODE back to t_min with ``restart_steps`` Heun steps on a
Karras (rho = 7) grid in sigma. The forward jump contracts the accumulated ODE error in
distribution, which the deterministic steps alone cannot. Each restart costs
2 ``restart_steps`` evaluations: NFE = 2N - 1 + 2 K ``restart_steps`` (N >= 2 main steps).
The re-noising draws come from ``noise.normal()`` (fresh draws, not a Brownian path), so
Restart has no pathwise limit. The callback sees the main grid's steps only.
"""

from __future__ import annotations

import math

from torch import Tensor

from scoresde.core.checks import check_finite_positive, check_positive_int
from scoresde.core.grids import karras_sigmas
from scoresde.solvers.base import Run, Solver, StepCallback
from scoresde.solvers.edm import EDMHeun


class Restart(Solver):
    """Heun on the main grid plus K restarts of the interval [t_min, t_max] (module doc)."""

    name = "restart"
    family = "ODE"
    stochastic = True
    order = 2.0

    def __init__(
        self,
        sigma_min: float = 0.06,
        sigma_max: float = 0.30,
        restarts: int = 2,
        restart_steps: int = 3,
    ) -> None:
        self.sigma_min = check_finite_positive("sigma_min", sigma_min)
        self.sigma_max = check_finite_positive("sigma_max", sigma_max)
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"need sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
        restarts = int(restarts)
        if restarts < 0:
            raise ValueError(f"restarts must be an integer >= 0, got {restarts}")
        self.restarts = restarts
        self.restart_steps = check_positive_int("restart_steps", restart_steps)
        self.heun = EDMHeun()

    @property
    def pathwise_limit(self) -> str | None:
        return None

    def planned_nfe(self, steps: int) -> int:
        extra = 2 * self.restarts * self.restart_steps if steps >= 2 else 0
        return 2 * steps - 1 + extra

    def _restart_run(self, run: Run, start: int, sig_min: float) -> tuple[Run, float, float]:
        """The sub-run t_max -> t_min = run.times[start] and the forward jump's r, sqrt(w)."""
        sig = karras_sigmas(self.sigma_max, sig_min, self.restart_steps + 1)
        times = run.sde.t_from_sigma(sig).clamp(max=run.sde.T)
        times[-1] = run.grid[start]
        like = run.t[0]
        rows = [like.new_full(like.shape, v) for v in times.tolist()]
        sub = Run(run.sde, run.score, run.noise, times, rows, False, run.generator)
        r, w = run.sde.transition(times[-1], times[0])
        return sub, float(r), math.sqrt(max(float(w), 0.0))

    def integrate(self, x: Tensor, run: Run, callback: StepCallback | None = None) -> Tensor:
        heun = self.heun
        plan = heun.prepare(run)
        sig = plan.sigma  # the main grid's noise levels s/m
        # restart from the interior grid point below sigma_max nearest to sigma_min (in log)
        inner = [k for k in range(1, run.steps) if sig[k] < self.sigma_max]
        start = min(inner, key=lambda k: abs(math.log(sig[k] / self.sigma_min)), default=None)
        if start is None and run.steps > 1:
            raise ValueError(
                f"sigma_max must exceed the noise level of some interior grid point (the "
                f"lowest is {sig[run.steps - 1]:.4g}), got {self.sigma_max}"
            )
        sub = None
        for k in range(run.steps):
            step = heun.final_step if run.is_last(k) else heun.step
            x = step(x, k, run, plan)
            if k + 1 == start and self.restarts > 0:
                if sub is None:
                    sub, r, std = self._restart_run(run, start, sig[start])
                    sub_plan = heun.prepare(sub)
                for _ in range(self.restarts):
                    x = x.mul(r).add_(run.noise.normal(), alpha=std)
                    for i in range(self.restart_steps):
                        x = heun.step(x, i, sub, sub_plan)
            if callback is not None:
                callback(k, run.times[k + 1], x)
        return x

    def describe(self) -> str:
        return (
            f"{self.name}(sigma {self.sigma_min:g}..{self.sigma_max:g}, "
            f"K={self.restarts}, steps={self.restart_steps})"
        )
