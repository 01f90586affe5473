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
- Metrics against the exact law where it is analytic (``scoresde.metrics``): sliced W1 to the
  projections' exact mixture CDFs, unbiased MMD^2 to the target in closed form, mean and
  covariance error, mode weights, cross-entropy. For a user model the distribution metrics
  compare replicate r with the reference run of replicate r + 1 (an independent sample).
- The floor is the ODE reference itself, scored like a solver: it is exact sampling from the
  same x_T (on an analytic target it is checked against the target's own sampler). A run is
  "at the floor" when none of its metrics differs significantly from exact sampling, each at
  level alpha / (number of metrics) (Bonferroni): MMD^2 against 0 and the cross-entropy
  against the target's entropy (one-sample t-tests: their exact-sampling expectations are
  known), the others against the reference's replicate values (Welch t-tests, which the
  shared x_T makes conservative). One-sided for distances, two-sided for the cross-entropy
  (``scoresde.evaluation.estimates``).
- Data-side metrics. A model that brings an evaluator (the built-in ``digits`` does: Fréchet
  distance in a classifier's features, label histogram, nearest-training-image distance) adds
  its metrics to every run, tested against the reference like the others, and reports their
  data floor (real held-out data scored the same way at the same n) beside the table.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from scoresde import metrics
from scoresde.adapters import Score
from scoresde.checks import (
    MAX_STEPS,
    check_device,
    check_positive_int,
    check_sampling_dtype,
    check_seed,
)
from scoresde.evaluation.estimates import estimate, floor_test, welch_p_value
from scoresde.grids import GRIDS
from scoresde.model import ModelSpec, load_model
from scoresde.model_check import check_model as run_model_check
from scoresde.sample import sample
from scoresde.schedules import CosineSchedule, DiscreteSchedule, LinearSchedule, NoiseSchedule
from scoresde.sde import SDE, VPSDE
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
DEFAULT_BUDGETS = (10, 20, 50, 100, 200, 500)
SCHEDULES: dict[str, Callable[[], NoiseSchedule]] = {
    "linear": LinearSchedule,
    "cosine": CosineSchedule,
    "discrete": DiscreteSchedule.linear,
}
RK45_TOLERANCES = (3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 1e-5)
# (rtol, atol) ladder for the adaptive SDE solver; (0.05, 0.0078) is its default
SDE_TOLERANCES = ((0.2, 0.05), (0.1, 0.02), (0.05, 0.0078), (0.02, 0.003))
REFERENCE_TOL = 1e-9  # rtol = atol of the float64 dopri5 reference on analytic targets
SDE_REFERENCE = ("euler_maruyama", 4000)  # solver and steps of the reverse-SDE reference
MODEL_REFERENCE = ("ode_heun", 1000)  # solver and NFE of the ODE reference for a user model
DEFAULT_SAMPLES, DEFAULT_REPLICATES = 500, 10
ALPHA = 0.01  # family-wise level of the tests that decide "at the floor"
ENTROPY_SAMPLES = 400_000
SW1_PROJECTIONS = 32  # the same directions for every run, so their choice is common to all
SCHEMA_VERSION = 2
METRICS = ("sw1", "mmd", "mean_err", "cov_err", "mode_err", "xent", "coupled")  # analytic targets
MODEL_METRICS = ("sw1", "mmd", "coupled")  # a user's model (plus its evaluator's metrics)
# the other metrics are distances (a solver can only be worse); xent can move either way
TWO_SIDED = ("xent",)


@dataclass
class Record:
    """One solver at one budget on one problem. ``metrics`` are replicate means, ``stderr``
    their standard errors, ``p_value`` the Welch test against the reference (exact sampling;
    all metrics but ``coupled``), ``floor`` / ``floor_stderr`` the reference's own values."""

    target: str
    solver: str
    config: str
    budget: int
    nfe: int
    steps: int
    schedule: str
    time_grid: str
    samples: int
    replicates: int
    seed: int
    wall_s: float
    metrics: dict[str, float]
    stderr: dict[str, float]
    p_value: dict[str, float]
    at_floor: bool
    floor: dict[str, float]
    floor_stderr: dict[str, float]
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
    return solver.steps_for_nfe(budget)


def _names(name: str, value: Any) -> list[str]:
    """A list of names from one name, a comma-separated string or an iterable of names."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()] or [value]
    try:
        names = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a name or a list of names, got {value!r}") from None
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{name} must be a non-empty list of names, got {value!r}")
    return names


def _check_budgets(nfe: int | str | Iterable[Any]) -> list[int]:
    if isinstance(nfe, str):
        try:
            nfe = [int(b) for b in nfe.split(",")]
        except ValueError:
            raise ValueError(f"nfe must be integers like '10,20,50', got {nfe!r}") from None
    elif isinstance(nfe, int) and not isinstance(nfe, bool):
        nfe = [nfe]
    try:
        nfe = list(nfe)
    except TypeError:
        raise TypeError(
            f"nfe must be an int or a list of ints (NFE budgets), got {nfe!r}"
        ) from None
    out = []
    for b in nfe:
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= MAX_STEPS:
            raise ValueError(f"NFE budgets must be integers in [1, {MAX_STEPS:,}], got {b!r}")
        out.append(b)
    if not out:
        raise ValueError("give at least one NFE budget")
    return sorted(set(out))


def _check_reference(name: str, value: Any) -> tuple[str, int]:
    try:
        solver, count = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (solver name, count), got {value!r}") from None
    registry.get(solver)
    return solver, check_positive_int(f"{name} count", count, maximum=MAX_STEPS)


@dataclass
class _Problem:
    name: str
    sde: SDE
    score: Score
    target: GaussianMixture | None
    event_shape: tuple[int, ...]
    evaluator: Any = None
    model: ModelSpec | None = None  # for its per-sample conditions


def _problem(target: str, schedule: str, model: tuple[str, ModelSpec] | None) -> _Problem:
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    if model is not None:
        name, spec = model
        return _Problem(name, spec.sde, spec.score, None, spec.shape, spec.evaluator, spec)
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    sde = VPSDE(SCHEDULES[schedule]())
    g: GaussianMixture = TARGETS[target]()
    score = Score(lambda x, t: g.eps(x, t, sde), sde, "eps")
    return _Problem(target, sde, score, g, (g.dim,))


class _Runner:
    """Runs solvers on one problem from the shared x_T (R * n rows) and noise seed."""

    def __init__(self, problem, x_T, replicates, noise_seed, dev, dtype, time_grid) -> None:
        self.problem, self.x_T, self.replicates = problem, x_T, replicates
        self.noise_seed, self.dev, self.dtype, self.time_grid = noise_seed, dev, dtype, time_grid

    def __call__(self, solver: Solver, steps: int, grid: str | None = None, dtype=None):
        grid, dtype = grid or self.time_grid, dtype or self.dtype
        # a solver that reads batch statistics runs replicate by replicate, so that replicates
        # stay independent and each sees a batch of n, as a user's run would
        parts = self.x_T.chunk(self.replicates) if solver.batch_coupled else [self.x_T]
        start, sols = time.perf_counter(), []
        n, model = self.x_T.shape[0] // self.replicates, self.problem.model
        for r, x_T in enumerate(parts):
            gen = torch.Generator(device=self.dev).manual_seed(self.noise_seed + r)
            condition = None
            if model is not None:  # conditions keyed by the index within a replicate
                condition = model.condition_for(torch.arange(x_T.shape[0], device=self.dev) % n)
            sols.append(
                sample(
                    self.problem.score,
                    self.problem.sde,
                    x_T=x_T.to(dtype),
                    solver=solver,
                    steps=steps,
                    time_grid=grid,
                    generator=gen,
                    noise="brownian" if solver.stochastic else "gaussian",
                    dtype=dtype,
                    condition=condition,
                )
            )
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        samples = torch.cat([s.samples for s in sols]).detach()
        return sols[0], samples, time.perf_counter() - start


class _Scorer:
    """Per-replicate metrics of a run's samples (R * n rows), against the analytic target or,
    for a user model, against the next replicate's reference samples."""

    def __init__(self, problem: _Problem, replicates: int, ode_ref: Tensor, seed: int) -> None:
        self.problem, self.r = problem, replicates
        self.ode_ref = ode_ref.to(torch.float64)
        self.sde_ref: Tensor | None = None
        g = problem.target
        self.expected: dict[str, float] = {}
        if g is not None:  # one kernel bandwidth per target, from a fixed exact sample
            self.bandwidth = metrics.median_bandwidth(g.sample(2000, _gen(seed + 11)))
            # exact sampling's expected values: MMD^2 is unbiased (0) and E[-log p] = H(p),
            # here from ENTROPY_SAMPLES exact draws (standard error 0.002 nats on gmm2d, 0.006
            # on gmm8d: a tenth of xent's standard error over 10 replicates of n = 500)
            big = g.sample(ENTROPY_SAMPLES, _gen(seed + 13)).to(torch.float64)
            self.expected = {"mmd": 0.0, "xent": float(-g.log_prob(big).mean())}
        else:
            self.bandwidth = metrics.median_bandwidth(self._split(self.ode_ref)[0])

    def _split(self, x: Tensor) -> Tensor:
        return x.reshape(self.r, -1, *x.shape[1:]).to(torch.float64)

    def __call__(self, x: Tensor, limit: str | None) -> dict[str, list[float]]:
        xs, g = self._split(x.cpu()), self.problem.target  # (R, n, ...) float64
        if g is not None:
            out = {
                "sw1": metrics.sliced_wasserstein_exact_replicates(xs, g, SW1_PROJECTIONS).tolist(),
                "mmd": [metrics.mmd_to_target(xr, g, self.bandwidth) for xr in xs],
                "mean_err": [metrics.mean_error(xr, g) for xr in xs],
                "cov_err": [metrics.covariance_error(xr, g) for xr in xs],
                "mode_err": [metrics.mode_weight_error(xr, g) for xr in xs],
                "xent": [metrics.cross_entropy(xr, g) for xr in xs],
            }
        else:  # replicate r against the reference of replicate r + 1: independent samples
            refs = self._split(self.ode_ref).roll(-1, dims=0)
            out = {
                "sw1": [metrics.sliced_wasserstein(a, b) for a, b in zip(xs, refs, strict=True)],
                "mmd": [
                    metrics.mmd_rbf(a, b, self.bandwidth) for a, b in zip(xs, refs, strict=True)
                ],
            }
        if self.problem.evaluator is not None:
            out.update(self.problem.evaluator(xs.reshape(self.r, -1, *self.problem.event_shape)))
        ref = {"ode": self.ode_ref, "reverse_sde": self.sde_ref}.get(limit) if limit else None
        if ref is None:
            out["coupled"] = [math.nan] * self.r
        else:
            dist = (xs - self._split(ref)).reshape(self.r, xs.shape[1], -1).norm(dim=-1)
            out["coupled"] = dist.mean(1).tolist()
        return out


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _summarise(values: dict[str, list[float]]) -> tuple[dict[str, float], dict[str, float]]:
    est = {k: estimate(v) for k, v in values.items()}
    return {k: e.mean for k, e in est.items()}, {k: e.se for k, e in est.items()}


def compare(
    targets: Sequence[str] = ("gmm2d", "gmm8d"),
    solvers: Sequence[str] = DEFAULT_SOLVERS,
    nfe: Sequence[int] | None = None,
    *,
    schedule: str = "linear",
    time_grid: str = "uniform",
    samples: int | None = None,
    replicates: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    model: str | None = None,
    reference: tuple[str, int] | None = None,
    sde_reference: tuple[str, int] | None = None,
    alpha: float = ALPHA,
    progress: Callable[[str], None] | None = None,
    on_samples: Callable[[str, int, Tensor], None] | None = None,
    check_model: bool = True,
) -> list[Record]:
    """Run every solver at every NFE budget on each target; return one ``Record`` per run.

    Args:
        targets: analytic targets (``scoresde.targets.TARGETS``); ignored with ``model``.
        solvers: solver specs ``name[:key=value...][:grid=rule]``: a list, or one string
            with specs separated by commas.
        nfe: budgets of score evaluations per sample (a two-evaluation step counts twice): a
            list, one int, or a string "10,20,50".
            Adaptive solvers run a tolerance ladder instead and are filed by their real NFE.
            Default DEFAULT_BUDGETS.
        samples, replicates: n samples in each of R independent replicates (R >= 2); every
            metric is reported as the replicate mean with its standard error. Default 500, 10.
        seed: x_T and the Brownian paths of all runs derive from it.
        model: a built-in model (``digits``) or ``module:callable`` (see ``scoresde.model``);
            replaces the analytic targets. Settings left at None take the model's
            ``compare_defaults`` first (digits: 10-100 NFE, 5 x 128 samples, references
            ode_heun at 500 NFE and 1000 Euler-Maruyama steps).
        reference: (solver, NFE budget) of the converged ODE reference for a user model
            (default MODEL_REFERENCE).
        sde_reference: (solver, steps) of the reverse-SDE reference, on the same Brownian path
            (default SDE_REFERENCE).
        alpha: family-wise level of the tests that decide whether a run is at the floor.
        on_samples: called as on_samples(label, nfe, x) with every run's samples x
            (R * n, ...), all from the same x_T row by row; label is the solver spec, or
            "reference" for the converged ODE reference. For pictures (``write_sample_grids``).
        check_model: with ``model``, run ``scoresde.check_model`` first, warning if the
            model's adapter looks wrong (``ModelCheckWarning``).
    """
    model_spec = load_model(model) if model is not None else None
    if model_spec is not None and check_model:
        run_model_check(model_spec, device=check_device("device", device))
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
    budgets = _check_budgets(nfe)
    targets, solvers = _names("targets", targets), _names("solvers", solvers)
    specs = [SolverSpec.parse(text) for text in solvers]
    solver_objs = {spec: spec.build() for spec in specs}  # unknown names and options fail here
    samples = check_positive_int("samples", samples, minimum=2, maximum=10**7)
    replicates = check_positive_int("replicates", replicates, minimum=2, maximum=1000)
    if samples * replicates > 10**7:
        raise ValueError(f"samples x replicates must be <= 10,000,000, got {samples * replicates}")
    seed = check_seed("seed", seed)
    dtype = check_sampling_dtype(dtype)
    dev = check_device("device", device)
    reference = _check_reference("reference", reference)
    sde_reference = _check_reference("sde_reference", sde_reference)
    if not (isinstance(alpha, float | int) and 0 < alpha < 1):
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    records: list[Record] = []
    for name in [model] if model is not None else targets:
        loaded = (name, model_spec) if model_spec is not None else None
        problem = _problem(name, schedule, loaded)
        records += _compare_problem(
            problem, solver_objs, budgets, schedule if model is None else "model", time_grid,
            samples, replicates, seed, dev, dtype, reference, sde_reference, alpha, progress,
            on_samples,
        )  # fmt: skip
    return records


def _compare_problem(
    problem, solver_objs, budgets, schedule, time_grid, n, replicates, seed, dev, dtype,
    reference, sde_reference, alpha, progress, on_samples,
) -> list[Record]:  # fmt: skip
    shape = (replicates * n, *problem.event_shape)
    x_T = problem.sde.prior_sample(shape, generator=torch.Generator(dev).manual_seed(seed),
                                   device=dev, dtype=dtype)  # fmt: skip
    run = _Runner(problem, x_T, replicates, seed + 7_919, dev, dtype, time_grid)
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
    score = _Scorer(problem, replicates, ode_ref, seed)
    two_sided = TWO_SIDED
    if problem.evaluator is not None:
        extra["data_floor"], extra["data_floor_stderr"] = _summarise(
            problem.evaluator.floor(n, replicates)
        )
        two_sided = TWO_SIDED + tuple(problem.evaluator.two_sided)
    if any(s.pathwise_limit == "reverse_sde" for s in solver_objs.values()):
        sde_solver = registry.get(sde_reference[0])
        sol, sde_ref, _ = run(sde_solver, sde_reference[1], grid="uniform")
        score.sde_ref = sde_ref.cpu().to(torch.float64)
        extra["sde_reference"] = f"{sol.solver}, {sde_reference[1]} uniform steps"
    floor_values = score(ode_ref, "ode")
    floor, floor_se = _summarise(floor_values)
    if problem.target is not None:  # the reference must be indistinguishable from exact sampling
        exact = problem.target.sample(replicates * n, _gen(seed + 104_729))
        exact_values = score(exact, None)
        extra["exact_sampler"], extra["exact_sampler_stderr"] = _summarise(exact_values)
        extra["exact_sampler_p_sw1"] = welch_p_value(
            exact_values["sw1"], floor_values["sw1"], "two-sided"
        )

    tested = {k: v for k, v in floor_values.items() if k != "coupled"}
    records = []
    for spec, solver in solver_objs.items():
        grid = spec.grid or time_grid
        for budget, steps, configured in _jobs(spec, solver, budgets):
            if progress is not None:
                progress(f"{problem.name} {spec.label} {budget or 'adaptive'}")
            sol, x, wall = run(configured, steps, grid)
            values = score(x, configured.pathwise_limit)
            means, ses = _summarise(values)
            p, at_floor = floor_test(values, tested, alpha, two_sided, score.expected)
            nfe = round(sol.stats.get("nfe_per_sample", sol.nfe))
            if on_samples is not None:
                on_samples(spec.label, nfe, x)
            records.append(
                Record(
                    target=problem.name,
                    solver=spec.label,
                    config=sol.solver,
                    budget=budget or _file_budget(nfe, budgets),
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
                    p_value=p,
                    at_floor=at_floor,
                    floor=floor,
                    floor_stderr=floor_se,
                    extra=dict(extra, pathwise_limit=configured.pathwise_limit),
                )
            )
            if budget == 0 and nfe > budgets[-1]:
                break  # an adaptive ladder stops once it has passed the largest budget
    return records


def _file_budget(nfe: int, budgets: list[int]) -> int:
    """An adaptive run is filed under the smallest budget that holds its NFE."""
    fits = [b for b in budgets if nfe <= b]
    return fits[0] if fits else nfe


def _jobs(spec: SolverSpec, solver: Solver, budgets: list[int]) -> list[tuple[int, int, Solver]]:
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


# -- verdicts drawn from the records ------------------------------------------------------------


def fewest_nfe_at_floor(records: Sequence[Record]) -> dict[tuple[str, str], int | None]:
    """{(target, solver): the smallest NFE from which every run of that solver is at the floor
    (no metric significantly different from exact sampling), or None if its largest run is
    not}."""
    out: dict[tuple[str, str], int | None] = {}
    for key in dict.fromkeys((r.target, r.solver) for r in records):
        runs = sorted((r for r in records if (r.target, r.solver) == key), key=lambda r: r.nfe)
        first = None
        for r in runs:
            if not r.at_floor:
                first = None
            elif first is None:
                first = r.nfe
        out[key] = first
    return out


ORDER_MIN_ERROR = {torch.float32: 1e-4, torch.float64: 1e-8}  # coupled errors below: round-off


def convergence_orders(
    records: Sequence[Record], min_error: float = ORDER_MIN_ERROR[torch.float32]
) -> dict[tuple[str, str], float | None]:
    """{(target, solver): the measured order p of coupled error ~ NFE^-p}, the least-squares
    slope over the runs whose coupled error exceeds ``min_error`` (float32 round-off leaves
    converged runs at 1e-6..1e-5); None without a pathwise limit or with fewer than 3 runs."""
    out: dict[tuple[str, str], float | None] = {}
    for key in dict.fromkeys((r.target, r.solver) for r in records):
        pts = sorted(
            (r.nfe, r.metrics["coupled"])
            for r in records
            if (r.target, r.solver) == key
            and math.isfinite(r.metrics["coupled"])
            and r.metrics["coupled"] > min_error
        )
        nfe = [n for n, _ in pts]
        out[key] = (
            metrics.convergence_order(nfe, [e for _, e in pts]) if len(set(nfe)) >= 3 else None
        )
    return out
