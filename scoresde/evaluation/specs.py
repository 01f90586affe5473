"""Solver specs as written on the command line, and the runs a spec makes at each budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scoresde.core.grids import GRIDS
from scoresde.evaluation.settings import RK45_TOLERANCES, SDE_TOLERANCES
from scoresde.solvers import registry
from scoresde.solvers.base import Solver


@dataclass(frozen=True)
class SolverSpec:
    """A solver as written on the command line: ``name[:key=value[:key=value ...]]``.

    ``grid=`` picks this solver's time grid (overriding compare's ``time_grid``); the other
    keys go to the solver's constructor, values read as int, float, true/false or text. For
    example ``dpm_solver++:order=3:grid=logsnr`` or ``edm_heun:s_churn=10:grid=karras``.
    """

    label: str
    name: str
    options: tuple[tuple[str, Any], ...] = ()
    grid: str | None = None

    @classmethod
    def parse(cls, text: str) -> SolverSpec:
        name, *pairs = text.strip().split(":")
        options: dict[str, Any] = {}
        grid = None
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise ValueError(f"solver option {pair!r} in {text!r} is not key=value")
            if key == "grid":
                if value not in GRIDS:
                    raise ValueError(f"grid={value!r} in {text!r}; known: {', '.join(GRIDS)}")
                grid = value
            else:
                options[key] = _option_value(value)
        return cls(text.strip(), name, tuple(options.items()), grid)

    def build(self, **extra: Any) -> Solver:
        try:
            return registry.get(self.name, **dict(self.options), **extra)
        except (TypeError, ValueError) as err:  # an unknown option or a value out of range
            raise ValueError(f"solver {self.label!r}: {err}") from None


def _option_value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def steps_for_budget(solver: Solver, budget: int) -> int:
    """The largest step count whose planned NFE fits in ``budget`` (0 if none does)."""
    return solver.steps_for_nfe(budget)


def file_budget(nfe: int, budgets: list[int]) -> int:
    """An adaptive run is filed under the smallest budget that holds its NFE."""
    fits = [b for b in budgets if nfe <= b]
    return fits[0] if fits else nfe


def jobs_for(spec: SolverSpec, solver: Solver, budgets: list[int]) -> list[tuple[int, int, Solver]]:
    """(budget, steps, solver) to run. An adaptive solver runs a tolerance ladder instead
    (RK45_TOLERANCES for ODEs, SDE_TOLERANCES for adaptive_sde), with budget 0 (filed by its
    real NFE afterwards), tightest last; the ladder stops after the first run whose NFE passes
    the largest budget. It takes only eps from the grid, so two steps (T, eps, 0) suffice."""
    if solver.adaptive:
        ladder = SDE_TOLERANCES if solver.stochastic else [(tol, tol) for tol in RK45_TOLERANCES]
        return [(0, 2, spec.build(rtol=r, atol=a)) for r, a in ladder]
    jobs = []
    for b in budgets:
        steps = steps_for_budget(solver, b)
        if steps >= 1:
            jobs.append((b, steps, solver))
    return jobs
