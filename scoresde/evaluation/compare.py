"""Solvers x NFE budgets on one problem, measured so that a verdict survives a reseed.

The design (docs/findings.md shows it at work):

- Replicates and common random numbers. Every run of every solver starts from the same R x n
  prior draws x_T (R replicates of n samples, one batch), and every stochastic solver reads
  the same Brownian path per sample (``noise="brownian"``, one path whatever the step count).
  Each metric is the replicate mean with its standard error (``scoresde.evaluation.estimates``).
- Coupled error. A converged reference run from the same x_T: for solvers whose pathwise limit
  is the probability-flow ODE, a float64 Dormand-Prince integration at rtol = atol =
  REFERENCE_TOL (a high-NFE run of ``reference`` for a user model); for those that converge to
  the reverse SDE, a fine Euler-Maruyama run of ``sde_reference`` steps on the same Brownian
  path. ``coupled`` = E|x - x_ref| per replicate: a bound on W1 between the two laws with
  almost no sampling noise. Both references stop at the same eps and apply the same final
  denoiser as the solvers, so the coupled error is discretisation error alone.
- Metrics against the exact law where it is analytic (``scoresde.evaluation.metrics``):
  sliced W1 to the projections' exact mixture CDFs, unbiased MMD^2 to the target in closed
  form, mean and covariance error, mode weights, cross-entropy. For a user model the
  distribution metrics compare replicate r with the reference run of replicate r + 1 (an
  independent sample).
- The floor is the ODE reference itself, scored like a solver: it is exact sampling from the
  same x_T (on an analytic target it is checked against the target's own sampler). A run is
  "at the floor" only by an equivalence test: every metric's difference from exact sampling
  lies, with 95 % confidence, within a margin delta, the metric's spread between two
  independent exact sample sets of the same size. It "differs" when a metric differs
  significantly, each at level alpha / (number of metrics) (Bonferroni): MMD^2 against 0 and
  the cross-entropy against the target's entropy (one-sample t-tests: their exact-sampling
  expectations are known), the others against the reference's replicate values (Welch
  t-tests, which the shared x_T makes conservative). One-sided for distances, two-sided for
  the cross-entropy. Otherwise the run is "undetermined", with the replicates that would
  decide (``scoresde.evaluation.estimates``).
- Data-side metrics. A model that brings an evaluator (``scoresde.models.evaluator``: e.g. a
  Fréchet distance in a classifier's features, a label histogram, a nearest-training-image
  distance) adds its metrics to every run, tested against the reference like the others, and
  reports their data floor (real held-out data scored the same way at the same n) beside the
  table, with the evaluator's own labels and footnote.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from scoresde.core.checks import (
    check_device,
    check_positive_int,
    check_sampling_dtype,
    check_seed,
)
from scoresde.core.grids import GRIDS
from scoresde.core.path_specs import path_from_spec
from scoresde.core.schedules import NoiseSchedule
from scoresde.core.sde import SDE, VPSDE
from scoresde.evaluation.estimates import floor_verdict, welch_p_value
from scoresde.evaluation.problem import Problem, build_problem
from scoresde.evaluation.record import Record
from scoresde.evaluation.runner import Runner, Scorer, seeded_generator, summarise
from scoresde.evaluation.settings import (
    ALPHA,
    DEFAULT_BUDGETS,
    DEFAULT_REPLICATES,
    DEFAULT_SAMPLES,
    DEFAULT_SOLVERS,
    MODEL_REFERENCE,
    REFERENCE_TOL,
    SDE_REFERENCE,
    TWO_SIDED,
    CompareSettings,
    check_budgets,
    check_reference,
    names_of,
)
from scoresde.evaluation.specs import SolverSpec, file_budget, jobs_for, steps_for_budget
from scoresde.evaluation.tuned_grid import TunedGrid
from scoresde.models import ModelSpec, load_model
from scoresde.models.check import check_model as run_model_check
from scoresde.solvers import registry
from scoresde.solvers.base import Solver
from scoresde.solvers.zero_terminal import for_path


def compare(
    targets: Sequence[str] = ("gmm2d", "gmm8d"),
    solvers: Sequence[str] = DEFAULT_SOLVERS,
    nfe: Sequence[int] | None = None,
    *,
    schedule: str | NoiseSchedule | None = None,
    path: str | Sequence[str] | None = None,
    time_grid: str | Tensor | TunedGrid = "uniform",
    samples: int | None = None,
    replicates: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    model: str | ModelSpec | None = None,
    reference: tuple[str, int] | None = None,
    sde_reference: tuple[str, int] | None = None,
    alpha: float = ALPHA,
    progress: Callable[[str], None] | None = None,
    on_samples: Callable[[str, int, Tensor], None] | None = None,
    check_model: bool = True,
) -> list[Record]:
    """Run every solver at every NFE budget on each target; return one ``Record`` per run.

    Args:
        targets: analytic targets (``scoresde.evaluation.targets.TARGETS``); ignored with ``model``.
        schedule: the VP schedule of the analytic targets: a name (``SCHEDULES``; default
            "linear") or any ``NoiseSchedule`` object. Not with ``model`` (a trained model
            has its own schedule).
        time_grid: the grid of solvers whose spec names none: a rule name, a tensor of N
            evaluation times, or a ``TunedGrid`` (checked against each solver spec). With a
            tensor or a tuned grid each solver runs once, at the N steps it holds, and
            ``nfe`` is ignored; a spec's own ``grid=file:PATH`` does the same for one solver.
        path: instead of ``schedule``, Gaussian paths to run every target on, from the same
            data: a list or a comma-separated string of specs ``name[:shift=a]``
            (``scoresde.core.path_specs``: vp-linear, vp-cosine, rectified-flow,
            rectified-flow:shift=3, edm, ...). Records are labelled by the path. Not with
            ``model`` (a model has its own path). The records of a path are filed under the
            target "<target>/<path>", e.g. "gmm2d/rectified-flow".
        solvers: solver specs ``name[:key=value...][:grid=rule]``: a list, or one string
            with specs separated by commas.
        nfe: budgets of score evaluations per sample (a two-evaluation step counts twice): a
            list, one int, or a string "10,20,50".
            Adaptive solvers run a tolerance ladder instead and are filed by their real NFE.
            Default DEFAULT_BUDGETS.
        samples, replicates: n samples in each of R independent replicates (R >= 2); every
            metric is reported as the replicate mean with its standard error. Default 500, 10.
        seed: x_T and the Brownian paths of all runs derive from it.
        model: a built-in model (``scoresde.models.BUILTIN_MODELS``), ``module:callable``
            (see ``scoresde.models``) or a ``ModelSpec`` built in Python (e.g. by
            ``from_diffusers``); replaces the analytic targets. Settings left at None
            take the model's ``compare_defaults`` first.
        reference: (solver, NFE budget) of the converged ODE reference for a user model
            (default MODEL_REFERENCE).
        sde_reference: (solver, steps) of the reverse-SDE reference, on the same Brownian path
            (default SDE_REFERENCE).
        alpha: family-wise level of the tests that decide whether a run is at the floor.
        on_samples: called as on_samples(label, nfe, x) with every run's samples x
            (R * n, ...), all from the same x_T row by row; label is the solver spec, or
            "reference" for the converged ODE reference. For pictures (``write_sample_grids``).
        check_model: with ``model``, run ``scoresde.check_model`` before the runs, warning if
            the model's adapter looks wrong (``ModelCheckWarning``).
    """
    if isinstance(model, ModelSpec):
        model_spec, model = model, "model"
    else:
        model_spec = load_model(model) if model is not None else None
    if model is not None and schedule is not None:
        raise ValueError(
            "schedule: a trained model has its own schedule (its ModelSpec's SDE); --schedule "
            "is for the analytic targets"
        )
    given = {
        "nfe": nfe,
        "samples": samples,
        "replicates": replicates,
        "reference": reference,
        "sde_reference": sde_reference,
    }
    fallback = {
        "nfe": DEFAULT_BUDGETS,
        "samples": DEFAULT_SAMPLES,
        "replicates": DEFAULT_REPLICATES,
        "reference": MODEL_REFERENCE,
        "sde_reference": SDE_REFERENCE,
    }
    model_defaults = model_spec.compare_defaults if model_spec is not None else {}
    settings = {
        k: v if v is not None else model_defaults.get(k, fallback[k]) for k, v in given.items()
    }
    nfe, samples, replicates = settings["nfe"], settings["samples"], settings["replicates"]
    reference, sde_reference = settings["reference"], settings["sde_reference"]
    budgets = check_budgets(nfe)
    targets, solvers = names_of("targets", targets), names_of("solvers", solvers)
    paths = _paths_of(path, schedule, model)
    schedule, grid_label, grid_times = _schedule_label(schedule), time_grid, None
    network_times = None
    if isinstance(time_grid, TunedGrid | Tensor):
        grid_label, grid_times, network_times = _given_grid(time_grid, solvers)
    specs = [SolverSpec.parse(text) for text in solvers]
    if grid_times is not None:
        specs = [spec.with_times(grid_times, grid_label, network_times) for spec in specs]
    solver_objs = {spec: spec.build() for spec in specs}  # unknown names and options fail here
    samples = check_positive_int("samples", samples, minimum=2, maximum=10**7)
    replicates = check_positive_int("replicates", replicates, minimum=2, maximum=1000)
    if samples * replicates > 10**7:
        raise ValueError(f"samples x replicates must be <= 10,000,000, got {samples * replicates}")
    seed = check_seed("seed", seed)
    dtype = check_sampling_dtype(dtype)
    dev = check_device("device", device)
    reference = check_reference("reference", reference)
    sde_reference = check_reference("sde_reference", sde_reference)
    if not (isinstance(alpha, float | int) and 0 < alpha < 1):
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    design = CompareSettings(
        schedule=schedule if model is None else "model",
        time_grid=grid_label,
        samples=samples,
        replicates=replicates,
        seed=seed,
        device=dev,
        dtype=dtype,
        reference=reference,
        sde_reference=sde_reference,
        alpha=float(alpha),
    )
    if model_spec is not None and check_model:  # once the arguments are known to be good
        run_model_check(model_spec, device=dev)
    records: list[Record] = []
    for label, sde in paths:
        run_design = design if label is None else replace(design, schedule=label)
        for name in [model] if model is not None else targets:
            loaded = (name, model_spec) if model_spec is not None else None
            problem = build_problem(name, schedule, loaded, sde)
            if label is not None:  # records, tables and verdicts keep the paths apart
                problem.name = f"{name}/{label}"
            records += run_problem(problem, solver_objs, budgets, run_design, progress, on_samples)
    return records


def _paths_of(path: Any, schedule: Any, model: Any) -> list[tuple[str | None, SDE | None]]:
    """[(label, sde)] of the ``path`` argument; [(None, sde)] for a schedule object's VP SDE;
    [(None, None)] for the named schedule's (``build_problem`` makes it)."""
    if path is None:
        if isinstance(schedule, NoiseSchedule):
            return [(None, VPSDE(schedule))]
        return [(None, None)]
    if model is not None:
        raise ValueError("path: a model has its own path; --path is for the analytic targets")
    if schedule is not None:
        raise ValueError("path: give schedule or path, not both (vp-cosine is the cosine VP)")
    return [(spec, path_from_spec(spec)) for spec in names_of("path", path)]


def _schedule_label(schedule: Any) -> str:
    """The schedule name records carry: the name given, a schedule object's repr, or
    "linear" by default."""
    if schedule is None:
        return "linear"
    if isinstance(schedule, NoiseSchedule):
        return repr(schedule)
    if not isinstance(schedule, str):
        raise TypeError(
            f"schedule must be a name or a NoiseSchedule, got {type(schedule).__name__}"
        )
    return schedule


def _given_grid(grid: TunedGrid | Tensor, solvers: list[str]) -> tuple[str, Tensor, Tensor | None]:
    """(label, times, network times) of a grid given in Python; a tuned grid must fit every
    solver."""
    if isinstance(grid, TunedGrid):
        for text in solvers:
            grid.check_for(text)
        return f"tuned:{grid.solver}@{grid.nfe}", grid.grid, grid.network_grid
    times = grid.detach().to("cpu", torch.float64).flatten()
    return f"custom({times.numel()} times)", times, None


def run_problem(
    problem: Problem,
    solver_objs: dict[SolverSpec, Solver],
    budgets: list[int],
    settings: CompareSettings,
    progress: Callable[[str], None] | None = None,
    on_samples: Callable[[str, int, Tensor], None] | None = None,
) -> list[Record]:
    """Every solver at every budget on ``problem``, from one x_T and noise seed: the
    references, the floors, then one scored ``Record`` per run (see the module doc)."""
    n, replicates, seed = settings.samples, settings.replicates, settings.seed
    dev, dtype, time_grid, alpha = (
        settings.device,
        settings.dtype,
        settings.time_grid,
        settings.alpha,
    )
    reference, sde_reference, schedule = (
        settings.reference,
        settings.sde_reference,
        settings.schedule,
    )
    shape = (replicates * n, *problem.event_shape)
    x_T = problem.sde.prior_sample(shape, generator=torch.Generator(dev).manual_seed(seed),
                                   device=dev, dtype=dtype)  # fmt: skip
    # the references run on the compare grid when it is a rule; a given grid fits one budget
    ref_grid = time_grid if time_grid in GRIDS else "uniform"
    run = Runner(problem, x_T, replicates, seed + 7_919, dev, dtype, ref_grid)
    extra: dict[str, Any] = {"alpha": alpha}
    if problem.target is not None:
        ref_solver = registry.get("ode_dopri5", rtol=REFERENCE_TOL, atol=REFERENCE_TOL)
        sol, ode_ref, _ = run(ref_solver, 2, dtype=torch.float64)
        extra["reference"] = f"ode_dopri5 float64 rtol=atol={REFERENCE_TOL:g} (NFE {sol.nfe})"
    else:
        ref_solver = registry.get(reference[0])
        sol, ode_ref, _ = run(ref_solver, steps_for_budget(ref_solver, reference[1]))
        extra["reference"] = f"{sol.solver} at NFE {sol.nfe}"
        if on_samples is not None:
            on_samples("reference", sol.nfe, ode_ref)
    score = Scorer(problem, replicates, ode_ref, seed)
    two_sided = TWO_SIDED
    if problem.evaluator is not None:
        extra["data_floor"], extra["data_floor_stderr"] = summarise(
            problem.evaluator.floor(n, replicates)
        )
        two_sided = TWO_SIDED + tuple(problem.evaluator.two_sided)
        extra["evaluator"] = {
            **problem.evaluator.presentation.as_dict(),
            "two_sided": list(problem.evaluator.two_sided),
        }
    if any(s.pathwise_limit == "reverse_sde" for s in solver_objs.values()):
        sde_solver = registry.get(sde_reference[0])
        sol, sde_ref, _ = run(sde_solver, sde_reference[1], grid="uniform")
        score.sde_ref = sde_ref.cpu().to(torch.float64)
        extra["sde_reference"] = f"{sol.solver}, {sde_reference[1]} uniform steps"
    floor_values = score(ode_ref, "ode")
    floor, floor_se = summarise(floor_values)
    if problem.target is not None:  # the reference must be indistinguishable from exact sampling
        exact = problem.target.sample(replicates * n, seeded_generator(seed + 104_729))
        exact_values = score(exact, None)
        extra["exact_sampler"], extra["exact_sampler_stderr"] = summarise(exact_values)
        extra["exact_sampler_p_sw1"] = welch_p_value(
            exact_values["sw1"], floor_values["sw1"], "two-sided"
        )

    tested = {k: v for k, v in floor_values.items() if k != "coupled"}
    if problem.target is not None:  # exact sampling judged like a solver: it must be at floor
        exact_verdict = floor_verdict(exact_values, tested, alpha, two_sided, score.expected)
        extra["exact_sampler_verdict"] = exact_verdict.label
    records = []
    for spec, solver in solver_objs.items():
        grid = spec.grid or time_grid
        times = spec.times if spec.times is not None else grid
        network_times = spec.network_times
        if solver.adaptive and spec.times is not None:
            times, network_times = "uniform", None  # an adaptive solver reads only eps
        # plan the budgets with what sample() runs (on a zero-SNR path: the limit step too)
        planner = for_path(solver, problem.sde)
        for budget, steps, configured in jobs_for(spec, solver, budgets):
            if planner is not solver and spec.times is None and budget and not solver.adaptive:
                steps = planner.steps_for_nfe(budget)
                if steps < 2:
                    continue
            if progress is not None:
                progress(f"{problem.name} {spec.label} {budget or 'adaptive'}")
            sol, x, wall = run(configured, steps, times, network_times=network_times)
            values = score(x, configured.pathwise_limit)
            means, ses = summarise(values)
            verdict = floor_verdict(values, tested, alpha, two_sided, score.expected)
            nfe = round(sol.stats.get("nfe_per_sample", sol.nfe))
            if on_samples is not None:
                on_samples(spec.label, nfe, x)
            records.append(
                Record(
                    target=problem.name,
                    solver=spec.label,
                    config=sol.solver,
                    budget=budget or file_budget(nfe, budgets),
                    nfe=nfe,
                    steps=steps,
                    schedule=schedule,
                    time_grid=grid,
                    samples=n,
                    replicates=replicates,
                    seed=seed,
                    wall_s=wall,
                    metrics=means,
                    stderr=ses,
                    p_value=verdict.p_value,
                    at_floor=verdict.label == "at floor",
                    floor=floor,
                    floor_stderr=floor_se,
                    extra=dict(extra, pathwise_limit=configured.pathwise_limit),
                    verdict=verdict.label,
                    margin=verdict.margin,
                    replicates_to_decide=verdict.replicates_to_decide,
                )
            )
            if budget == 0 and nfe > budgets[-1]:
                break  # an adaptive ladder stops once it has passed the largest budget
    return records
