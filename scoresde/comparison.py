"""Solvers x NFE budgets x schedules on one problem: which solver is best for a given budget?

``compare`` runs every solver at every budget of score evaluations (a two-evaluation step
counts twice), measures the samples against the exact target (or, for a user model, against
a reference run), and returns one record per run. ``write_results`` stores them as JSON, CSV
and a log-log plot of error against NFE. The JSON schema is in docs/results-schema.md.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from scoresde import metrics
from scoresde.adapters import Score
from scoresde.checks import (
    MAX_STEPS,
    check_device,
    check_positive_int,
    check_sampling_dtype,
    check_seed,
)
from scoresde.grids import GRIDS
from scoresde.model import load_model
from scoresde.output_dir import atomic_write, check_output_dir
from scoresde.sample import sample
from scoresde.schedules import CosineSchedule, DiscreteSchedule, LinearSchedule, NoiseSchedule
from scoresde.sde import VPSDE
from scoresde.solvers import registry
from scoresde.solvers.base import Solver
from scoresde.targets import TARGETS, GaussianMixture

DEFAULT_SOLVERS = (
    "ddpm_ancestral",
    "euler_maruyama",
    "reverse_diffusion",
    "pc",
    "annealed_langevin",
    "adaptive_sde",
    "sde_dpm_solver++:order=2:grid=logsnr",
    "ode_euler",
    "ode_heun",
    "ode_rk45",
    "ddim",
    "edm_heun:grid=karras",
    "dpm_solver++:order=2:grid=logsnr",
    "dpm_solver++:order=3:grid=logsnr",
    "dpm_solver:order=3:grid=logsnr",
)
DEFAULT_BUDGETS = (10, 20, 50, 100, 250, 1000)
SCHEDULES: dict[str, Callable[[], NoiseSchedule]] = {
    "linear": LinearSchedule,
    "cosine": CosineSchedule,
    "discrete": DiscreteSchedule.linear,
}
RK45_TOLERANCES = (3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 1e-5)
# (rtol, atol) ladder for the adaptive SDE solver; (0.05, 0.0078) is its default
SDE_TOLERANCES = ((0.2, 0.05), (0.1, 0.02), (0.05, 0.0078), (0.02, 0.003))
FLOOR_FACTOR = 1.5  # "at the floor": within this factor of the exact-vs-exact metric
FLOOR_PAIRS = 5  # the floor is the median of this many exact samples scored against the reference
SCHEMA_VERSION = 1


@dataclass
class Record:
    """One run: a solver at a budget on a target. ``metrics`` and ``floor`` share keys."""

    target: str
    solver: str
    config: str
    budget: int
    nfe: int
    steps: int
    schedule: str
    time_grid: str
    samples: int
    seed: int
    wall_s: float
    metrics: dict[str, float]
    floor: dict[str, float]
    best: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


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
    steps = 0
    for n in range(max(1, budget), 0, -1):
        if solver.planned_nfe(n) <= budget:
            steps = n
            break
    return steps


def _names(name: str, value: Any) -> list[str]:
    """A list of names from one name or an iterable of them."""
    if isinstance(value, str):
        return [value]
    try:
        names = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a name or a list of names, got {value!r}") from None
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{name} must be a non-empty list of names, got {value!r}")
    return names


def _check_budgets(nfe: Iterable[Any]) -> list[int]:
    out = []
    for b in nfe:
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= MAX_STEPS:
            raise ValueError(f"NFE budgets must be integers in [1, {MAX_STEPS:,}], got {b!r}")
        out.append(b)
    if not out:
        raise ValueError("give at least one NFE budget")
    return sorted(set(out))


def _problem(target: str, schedule: str, model: str | None):
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    if model is not None:
        spec = load_model(model)
        return spec.sde, spec.score, None, spec.shape
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    sde = VPSDE(SCHEDULES[schedule]())
    g: GaussianMixture = TARGETS[target]()
    score = Score(lambda x, t: g.eps(x, t, sde), sde, "eps")
    return sde, score, g, (g.dim,)


def compare(
    targets: Sequence[str] = ("gmm2d", "gmm8d"),
    solvers: Sequence[str] = DEFAULT_SOLVERS,
    nfe: Sequence[int] = DEFAULT_BUDGETS,
    *,
    schedule: str = "linear",
    time_grid: str = "uniform",
    samples: int = 4000,
    seed: int = 0,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    model: str | None = None,
    reference: tuple[str, int] = ("ode_heun", 500),
    progress: Callable[[str], None] | None = None,
) -> list[Record]:
    """Run every solver at every NFE budget on each target; return one ``Record`` per run.

    On an analytic target the noise floor of each metric is its median over FLOOR_PAIRS
    independent exact samples scored like a solver's output: one exact pair is itself a random
    draw (0.5-2x the median at n = 20000), which made "within 1.5x of the floor" a coin toss
    for converged solvers. An adaptive solver's NFE is its mean per-sample score evaluations
    (the network is called on the still-running rows only).

    With ``model="module:callable"`` the user's network replaces the targets; metrics are then
    distances to a reference run (``reference`` = (solver, NFE budget)) and the noise floor is
    the distance between two reference runs with different seeds.
    """
    budgets = _check_budgets(nfe)
    targets, solvers = _names("targets", targets), _names("solvers", solvers)
    specs = [SolverSpec.parse(text) for text in solvers]
    solver_objs = {spec: spec.build() for spec in specs}  # unknown names and options fail here
    samples = check_positive_int("samples", samples, minimum=2, maximum=10**7)
    seed = check_seed("seed", seed)
    dtype = check_sampling_dtype(dtype)
    dev = check_device("device", device)
    records: list[Record] = []
    for target in [model] if model is not None else targets:
        sde, score, g, event_shape = _problem(target, schedule, model)
        shape = (samples, *event_shape)

        def run(solver, steps, run_seed, grid=time_grid, score=score, sde=sde, shape=shape):
            gen = torch.Generator(device=dev).manual_seed(run_seed)
            start = time.perf_counter()
            sol = sample(
                score,
                sde,
                shape,
                solver=solver,
                steps=steps,
                time_grid=grid,
                generator=gen,
                device=dev,
                dtype=dtype,
            )
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            return sol, time.perf_counter() - start

        if g is not None:
            ref = g.sample(samples, torch.Generator().manual_seed(seed + 1_000_003))
            exact = [
                metrics.all_metrics(
                    g.sample(samples, torch.Generator().manual_seed(seed + k * 1_000_003)), ref, g
                )
                for k in range(2, 2 + FLOOR_PAIRS)
            ]
            floor = {key: statistics.median(m[key] for m in exact) for key in exact[0]}
            extra = {}
        else:
            ref_solver = registry.get(reference[0])
            ref_steps = steps_for_budget(ref_solver, reference[1])
            ref = run(ref_solver, ref_steps, seed + 1_000_003)[0].samples.cpu()
            ref2 = run(ref_solver, ref_steps, seed + 2_000_003)[0].samples.cpu()
            extra = {"reference": f"{reference[0]} at NFE {reference[1]}"}
            floor = metrics.all_metrics(ref2, ref, g)

        for spec, solver in solver_objs.items():
            grid = spec.grid or time_grid
            for budget, steps, configured in _jobs(spec, solver, budgets):
                if progress is not None:
                    progress(f"{target} {spec.label} {budget}")
                sol, wall = run(configured, steps, seed, grid)
                x = sol.samples.detach().cpu()
                records.append(
                    Record(
                        target=target,
                        solver=spec.label,
                        config=sol.solver,
                        budget=budget,
                        nfe=round(sol.stats.get("nfe_per_sample", sol.nfe)),
                        steps=steps,
                        schedule=schedule if model is None else "model",
                        time_grid=grid,
                        samples=samples,
                        seed=seed,
                        wall_s=wall,
                        metrics=metrics.all_metrics(x, ref, g),
                        floor=floor,
                        extra=dict(extra),
                    )
                )
    _mark_best(records)
    return records


def _jobs(spec: SolverSpec, solver: Solver, budgets: list[int]) -> list[tuple[int, int, Solver]]:
    """(budget, steps, solver) to run. An adaptive solver runs a tolerance ladder instead
    (RK45_TOLERANCES for ODEs, SDE_TOLERANCES for adaptive_sde): each tolerance is reported
    under the smallest budget its actual NFE fits (the NFE is known only after the run, so
    compare reports rows by their real NFE). An adaptive solver takes only eps from the grid,
    so two steps (T, eps, 0) suffice and no per-step time tensors are built for nothing."""
    if solver.adaptive:
        ladder = SDE_TOLERANCES if solver.stochastic else [(tol, tol) for tol in RK45_TOLERANCES]
        return [(0, 2, spec.build(rtol=r, atol=a)) for r, a in ladder]
    jobs = []
    for b in budgets:
        steps = steps_for_budget(solver, b)
        if steps >= 1:
            jobs.append((b, steps, solver))
    return jobs


def _mark_best(records: list[Record]) -> None:
    budgets = sorted({r.budget for r in records if r.budget})
    for r in records:
        if r.budget == 0:  # adaptive: file under the smallest budget that holds its NFE
            fits = [b for b in budgets if r.nfe <= b]
            r.budget = fits[0] if fits else r.nfe
    groups: dict[tuple[str, int], list[Record]] = {}
    for r in records:
        groups.setdefault((r.target, r.budget), []).append(r)
    for group in groups.values():
        finite = [r for r in group if math.isfinite(r.metrics["sw1"])]
        if finite:
            min(finite, key=lambda r: r.metrics["sw1"]).best = True


# -- presentation -------------------------------------------------------------------------------

TABLE_METRICS = ("sw1", "mmd", "mean_err", "cov_err", "mode_err", "xent")


def format_table(records: Sequence[Record]) -> str:
    """A plain-text table, one row per run, '*' marking the best SW1 at each budget."""
    lines = []
    width = max([20] + [len(r.solver) + 1 for r in records])
    for target in dict.fromkeys(r.target for r in records):
        rows = sorted((r for r in records if r.target == target), key=lambda r: (r.budget, r.nfe))
        keys = [k for k in TABLE_METRICS if k in rows[0].metrics]
        floor = rows[0].floor
        head = f"{'budget':>6} {'solver':<{width}} {'NFE':>5} " + " ".join(f"{k:>9}" for k in keys)
        grids = ", ".join(dict.fromkeys(r.time_grid for r in rows))
        lines += [
            f"target {target}  (schedule {rows[0].schedule}, grid {grids}, n = {rows[0].samples})",
            head + f" {'wall s':>7}",
            "-" * (len(head) + 8),
        ]
        lines.append(
            f"{'floor':>6} {'exact vs exact':<{width}} {'':>5} "
            + " ".join(f"{floor[k]:9.4f}" for k in keys)
        )
        for r in rows:
            mark = "*" if r.best else " "
            vals = " ".join(f"{r.metrics[k]:9.4f}" for k in keys)
            lines.append(
                f"{r.budget:>6} {mark}{r.solver:<{width - 1}} {r.nfe:>5} {vals} {r.wall_s:7.2f}"
            )
        lines.append("")
    lines.append(
        "* best sliced W1 at that budget. floor: the same metric for exact samples of the same "
        f"size (median of {FLOOR_PAIRS}; with a model: between two reference runs). Adaptive "
        "solvers: NFE is the mean per sample."
    )
    return "\n".join(lines)


def first_at_floor(
    records: Sequence[Record], factor: float = FLOOR_FACTOR
) -> dict[tuple[str, str], int | None]:
    """{(target, solver): the smallest NFE of a run with SW1 <= factor x floor, or None}."""
    out: dict[tuple[str, str], int | None] = {}
    for r in sorted(records, key=lambda r: r.nfe):
        key = (r.target, r.solver)
        out.setdefault(key, None)
        if out[key] is None and r.metrics["sw1"] <= factor * r.floor["sw1"]:
            out[key] = r.nfe
    return out


def format_floor_summary(records: Sequence[Record], factor: float = FLOOR_FACTOR) -> str:
    """One line per solver: the fewest NFE that reached SW1 <= factor x floor, per target."""
    first = first_at_floor(records, factor)
    targets = list(dict.fromkeys(r.target for r in records))
    solvers = list(dict.fromkeys(r.solver for r in records))
    most: dict[tuple[str, str], int] = {}
    for r in records:
        most[(r.target, r.solver)] = max(r.nfe, most.get((r.target, r.solver), 0))
    width = max([20] + [len(s) for s in solvers])
    lines = [f"fewest NFE with SW1 <= {factor:g} x floor (among the budgets run)"]
    lines.append(f"{'solver':<{width}} " + " ".join(f"{t:>8}" for t in targets))
    for solver in solvers:
        cells = []
        for t in targets:
            if (t, solver) not in first:
                cells.append(f"{'':>8}")
            else:
                nfe = first[(t, solver)]
                over = f"{'>' + str(most[(t, solver)]):>8}"
                cells.append(f"{nfe:>8}" if nfe is not None else over)
        lines.append(f"{solver:<{width}} " + " ".join(cells))
    return "\n".join(lines)


def records_to_json(records: Sequence[Record], settings: dict[str, Any]) -> str:
    return json.dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "settings": settings,
            "records": [asdict(r) for r in records],
        },
        indent=2,
        allow_nan=True,
    )


def records_to_csv(records: Sequence[Record]) -> str:
    buf = io.StringIO()
    keys = list(records[0].metrics) if records else []
    writer = csv.writer(buf)
    writer.writerow(
        [
            "target",
            "solver",
            "config",
            "budget",
            "nfe",
            "steps",
            "schedule",
            "time_grid",
            "samples",
            "seed",
            "wall_s",
            "best",
        ]
        + keys
        + [f"floor_{k}" for k in keys]
    )
    for r in records:
        writer.writerow(
            [
                r.target,
                r.solver,
                r.config,
                r.budget,
                r.nfe,
                r.steps,
                r.schedule,
                r.time_grid,
                r.samples,
                r.seed,
                f"{r.wall_s:.6f}",
                int(r.best),
            ]
            + [repr(r.metrics[k]) for k in keys]
            + [repr(r.floor[k]) for k in keys]
        )
    return buf.getvalue()


def plot_error_vs_nfe(records: Sequence[Record], path: Path, metric_names=("sw1", "mmd")) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(r.target for r in records))
    fig, axes = plt.subplots(
        len(metric_names),
        len(targets),
        squeeze=False,
        figsize=(5.5 * len(targets), 4 * len(metric_names)),
    )
    for j, target in enumerate(targets):
        rows = [r for r in records if r.target == target]
        for i, metric in enumerate(metric_names):
            ax = axes[i][j]
            floor = rows[0].floor[metric]
            for solver in dict.fromkeys(r.solver for r in rows):
                pts = sorted((r.nfe, r.metrics[metric]) for r in rows if r.solver == solver)
                pts = [(n, v) for n, v in pts if math.isfinite(v) and v > 0]
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=solver)
            if floor > 0:
                ax.axhspan(
                    floor * 0.67,
                    floor * 1.5,
                    color="grey",
                    alpha=0.25,
                    label="noise floor (x0.67..x1.5)",
                )
                ax.axhline(floor, color="grey", lw=1)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("score evaluations (NFE)")
            ax.set_ylabel(metric)
            ax.set_title(f"{target}: {metric}")
            ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(
    records: Sequence[Record], out: str | Path, settings: dict[str, Any]
) -> list[Path]:
    """results.json, results.csv and error_vs_nfe.png in ``out``, each written atomically."""
    path = check_output_dir(out)
    png_tmp = path / ".error_vs_nfe.tmp.png"
    plot_error_vs_nfe(records, png_tmp)
    written = []
    for name, data in (
        ("results.json", records_to_json(records, settings).encode()),
        ("results.csv", records_to_csv(records).encode()),
    ):
        atomic_write(path / name, data)
        written.append(path / name)
    os.replace(png_tmp, path / "error_vs_nfe.png")
    written.append(path / "error_vs_nfe.png")
    return written
