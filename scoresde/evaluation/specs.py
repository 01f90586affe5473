"""Solver specs as written on the command line, and the runs a spec makes at each budget."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from scoresde.core.grids import GRIDS
from scoresde.evaluation.settings import RK45_TOLERANCES, SDE_TOLERANCES
from scoresde.evaluation.tuned_grid import TunedGrid
from scoresde.solvers import registry
from scoresde.solvers.base import Solver


@dataclass(frozen=True)
class SolverSpec:
    """A solver as written on the command line: ``name[:key=value[:key=value ...]]``.

    ``grid=`` picks this solver's time grid (overriding compare's ``time_grid``): a rule name,
    or ``grid=file:PATH`` for a grid tuned by ``scoresde tune`` (``TunedGrid``; it must have
    been tuned for this solver, and its length sets the steps and so the NFE). The other keys
    go to the solver's constructor, values read as int, float, true/false or text. For
    example ``dpm_solver++:order=3:grid=logsnr`` or ``unipc:grid=file:unipc6.json``.
    """

    label: str
    name: str
    options: tuple[tuple[str, Any], ...] = ()
    grid: str | None = None
    # the evaluation times of a grid file or a grid given in Python (not part of the identity)
    times: Tensor | None = field(default=None, compare=False, hash=False)
    # a grid file's decoupled network times (``TunedGrid.network_grid``), if it has them
    network_times: Tensor | None = field(default=None, compare=False, hash=False)

    @classmethod
    def parse(cls, text: str) -> SolverSpec:
        head, sep, path = text.strip().partition(":grid=file:")
        name, *pairs = head.split(":")
        options: dict[str, Any] = {}
        grid, times, network_times = None, None, None
        for pair in pairs:
            key, eq, value = pair.partition("=")
            if not eq or not key:
                raise ValueError(f"solver option {pair!r} in {text!r} is not key=value")
            if key == "grid":
                if value not in GRIDS:
                    raise ValueError(
                        f"grid={value!r} in {text!r}; known: {', '.join(GRIDS)}, or file:PATH"
                    )
                grid = value
            else:
                options[key] = _option_value(value)
        if sep:
            if grid is not None or not path:
                raise ValueError(f"solver {text!r}: give one grid=, a rule or file:PATH")
            tuned = TunedGrid.load(path)
            tuned.check_for(head)
            grid, times, network_times = f"file:{path}", tuned.grid, tuned.network_grid
        return cls(text.strip(), name, tuple(options.items()), grid, times, network_times)

    def with_times(
        self, times: Tensor, label: str, network_times: Tensor | None = None
    ) -> SolverSpec:
        """This spec on the given evaluation times (unless it names its own grid)."""
        if self.grid is not None:
            return self
        return SolverSpec(self.label, self.name, self.options, label, times, network_times)

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
    if spec.times is not None:  # a given grid: its length sets the steps, whatever the budgets
        steps = spec.times.numel()
        return [(solver.planned_nfe(steps), steps, solver)]
    jobs = []
    for b in budgets:
        steps = steps_for_budget(solver, b)
        if steps >= 1:
            jobs.append((b, steps, solver))
    return jobs
