"""Time grids optimised for a solver, a schedule and a step count.

``optimise_grid`` picks the N evaluation times T = t_0 > ... > t_{N-1} = eps of a deterministic
solver by minimising its measured global error on a target whose score is known exactly:

    error(grid) = SW1(x_solver(x_T; grid), x_ref(x_T))    (default; or the pathwise RMSE)

where x_ref is the same start x_T carried through the probability-flow ODE by the adaptive
Dormand–Prince solver at tight tolerance, then Tweedie's denoiser at eps (the same final step
the solver takes). The interior points are parametrised by N - 1 positive increments in
lambda = log(alpha / sigma), lambda_i = lambda_T + (lambda_eps - lambda_T) cumsum(softmax(theta)),
so every candidate is a valid strictly decreasing grid; theta starts at the log-SNR-uniform
grid (all zeros) or another rule's grid, and scipy's Nelder–Mead minimises the error. The
result is a plain float64 tensor of N times that ``sample(time_grid=...)`` takes, and that
``torch.save`` stores.

A grid found on one target transfers to models on the same schedule the way hand-made grids do
(it encodes where along lambda the solver needs its steps); the report gives the error on a
held-out set of starts so over-fitting to the training starts shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.optimize
import torch
from torch import Tensor

from scoresde.core.adapters import Score
from scoresde.core.checks import check_positive_int
from scoresde.core.grids import GRIDS, make_time_grid
from scoresde.core.sde import SDE
from scoresde.evaluation.metrics import sliced_wasserstein
from scoresde.evaluation.specs import SolverSpec
from scoresde.evaluation.targets import GaussianMixture
from scoresde.evaluation.tuned_grid import TunedGrid
from scoresde.likelihood import decode
from scoresde.models import ModelSpec, load_model
from scoresde.models.fingerprint import model_fingerprint
from scoresde.sample import default_eps, sample
from scoresde.solvers import registry
from scoresde.solvers.base import Solver, tweedie_coefficients


def _rmse(x: Tensor, ref: Tensor) -> float:
    return float((x - ref).pow(2).mean().sqrt())


OBJECTIVES = {"sw": sliced_wasserstein, "rmse": _rmse}


@dataclass
class GridResult:
    """grid: (N,) float64 evaluation times T .. eps.  error / initial_error: the objective on
    the training starts; held_out_error / held_out_initial: on fresh starts.  evaluations:
    solver runs spent."""

    grid: Tensor
    error: float
    initial_error: float
    held_out_error: float
    held_out_initial: float
    evaluations: int
    init: str


def _lam(sde: SDE, t: Tensor) -> Tensor:
    return 0.5 * sde.log_snr(t)


def _grid_from_theta(
    sde: SDE, theta: np.ndarray, lam_T: float, lam_eps: float, T: float, eps: float, free_end: bool
) -> Tensor:
    span = lam_eps - lam_T
    if free_end:  # the last parameter pulls the end back from lambda(eps): span * sigmoid(rho)
        theta, rho = theta[:-1], theta[-1]
        span = span / (1 + np.exp(-rho))
    w = np.exp(theta - theta.max())
    frac = np.concatenate([[0.0], np.cumsum(w / w.sum())])
    lam = torch.as_tensor(lam_T + span * frac, dtype=torch.float64)
    t = sde.t_from_log_snr(2 * lam).clamp(eps, T)
    t[0] = T
    if not free_end:
        t[-1] = eps
    return t


def _theta_from_grid(sde: SDE, grid: Tensor, free_end: bool) -> np.ndarray:
    lam = _lam(sde, grid).numpy()
    theta = np.log(np.clip(np.diff(lam), 1e-12, None))
    return np.append(theta, 4.0) if free_end else theta  # sigmoid(4) = 0.98 of the span


def minimise(loss: Callable[[np.ndarray], float], theta0: np.ndarray, max_evaluations: int):
    """The one optimiser of this module: scipy's adaptive Nelder–Mead on the grid parameters
    theta (softmax increments in lambda, see the module doc), at most ``max_evaluations``
    solver runs."""
    return scipy.optimize.minimize(
        loss,
        theta0,
        method="Nelder-Mead",
        options={"maxfev": max_evaluations, "xatol": 1e-3, "fatol": 1e-7, "adaptive": True},
    )


def _reference(score, sde: SDE, x_T: Tensor, eps: float) -> Tensor:
    x_eps = decode(score, sde, x_T, rtol=1e-8, atol=1e-8, eps=eps).value
    a, b = tweedie_coefficients(sde, eps)
    return x_eps * a + score(x_eps, torch.full((x_T.shape[0],), eps, dtype=x_T.dtype)) * b


def optimise_grid(
    solver: str | Solver,
    sde: SDE,
    target: GaussianMixture,
    steps: int,
    *,
    eps: float = 1e-3,
    samples: int = 1024,
    init: str = "logsnr",
    max_evaluations: int = 400,
    seed: int = 0,
    free_end: bool = True,
    objective: str = "sw",
) -> GridResult:
    """The N = ``steps`` evaluation times minimising ``solver``'s error on ``target``.

    Args:
        solver: a deterministic solver (name or instance), e.g. "dpm_solver++".
        sde: the SDE and schedule to sample (e.g. ``VPSDE(CosineSchedule())``).
        target: a Gaussian mixture with exact score (``scoresde.evaluation.targets``).
        steps: N (as in ``sample``); the solver spends ``planned_nfe(N)`` evaluations.
        eps: the last evaluation time.
        samples: starts x_T for the objective (float64); as many again are held out.
        init: the grid rule to start from ("logsnr", "uniform", "quadratic", "karras").
        max_evaluations: Nelder–Mead's budget of solver runs.
        free_end: let the last evaluation time move up from ``eps`` (the final denoiser then
            covers the rest of the way to 0, like a last solver step); the reference always
            goes to ``eps``. False pins t_{N-1} = eps.
        objective: "sw" (sliced W1 between the solver's outputs and the reference outputs,
            fixed projections: the distributions should match) or "rmse" (pathwise error).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
    measure = OBJECTIVES[objective]
    solver = registry.get(solver)
    if solver.stochastic or solver.adaptive:
        raise ValueError(
            f"optimise_grid needs a deterministic fixed-grid solver, got {solver.describe()}"
        )
    steps = check_positive_int("steps", steps, minimum=3)
    samples = check_positive_int("samples", samples)
    score = Score(lambda x, t: target.eps(x, t, sde), sde, "eps")
    gen = torch.Generator().manual_seed(seed)
    starts = sde.prior_sample((2 * samples, target.dim), gen, dtype=torch.float64)
    train, held = starts[:samples], starts[samples:]
    ref_train, ref_held = (_reference(score, sde, x, eps) for x in (train, held))
    grid0 = make_time_grid(sde, steps, init, eps)[:-1]
    lam_T, lam_eps = (float(v) for v in _lam(sde, grid0[[0, -1]]))

    def error(grid: Tensor, x_T: Tensor, ref: Tensor) -> float:
        out = sample(score, sde, x_T=x_T, solver=solver, steps=steps, time_grid=grid, eps=eps)
        e = measure(out.samples, ref)
        return e if np.isfinite(e) else 1e6

    def loss(theta: np.ndarray) -> float:
        return error(to_grid(theta), train, ref_train)

    def to_grid(theta: np.ndarray) -> Tensor:
        return _grid_from_theta(sde, theta, lam_T, lam_eps, float(grid0[0]), eps, free_end)

    theta0 = _theta_from_grid(sde, grid0, free_end)
    res = minimise(loss, theta0, max_evaluations)
    best = to_grid(res.x)
    return GridResult(
        grid=best,
        error=float(res.fun),
        initial_error=loss(theta0),
        held_out_error=error(best, held, ref_held),
        held_out_initial=error(to_grid(theta0), held, ref_held),
        evaluations=int(res.nfev),
        init=init,
    )


TEACHER_TOL = 1e-6  # rtol = atol of the dopri5 teacher run of tune_grid


def _resolve_model(model: Any, sde: SDE | None, shape: tuple[int, ...] | None):
    """(label, ModelSpec) for a ModelSpec, a built-in name or ``module:callable``, or a bare
    score function with ``sde`` and ``shape``."""
    if isinstance(model, ModelSpec):
        return "custom", model
    if isinstance(model, str):
        return model, load_model(model)
    if callable(model):
        if sde is None or shape is None:
            raise ValueError("model: a bare score function needs sde= and shape= (one sample)")
        return "custom", ModelSpec(model, sde, tuple(shape))
    raise TypeError(
        f"model must be a ModelSpec, a model name or a score function, got {type(model).__name__}"
    )


def tune_grid(
    model: Any,
    solver: str,
    nfe: int,
    *,
    sde: SDE | None = None,
    shape: tuple[int, ...] | None = None,
    samples: int = 128,
    held_out: int = 256,
    init: str = "best",
    max_evaluations: int = 150,
    seed: int = 0,
    eps: float | None = None,
    free_end: bool = True,
    device: str | torch.device = "cpu",
    on_run: Callable[[], None] | None = None,
    on_held_out: Callable[[str, Tensor], None] | None = None,
) -> TunedGrid:
    """The evaluation times at which ``solver`` at ``nfe`` evaluations comes closest to the
    converged probability-flow ODE on ``model``, measured on the model itself.

    objective(grid) = E |x_solver(x_T; grid) - x_teacher(x_T)|, the coupled error, over
    ``samples`` training starts x_T; x_teacher is the same x_T through the ODE by adaptive
    Dormand–Prince (rtol = atol = TEACHER_TOL), then the same final step at eps. The N - 1
    times after T are parametrised by softmax increments in lambda = log(m/s) between
    lambda(T) and lambda(eps) (every candidate is a valid strictly decreasing grid), and with
    ``free_end`` the last time may move up from eps (its final denoiser then covers the rest,
    like a last solver step), as in ``optimise_grid``; started from the named grid with the
    lowest training error (``init="best"``) or from the named rule ``init``, and minimised by
    Nelder–Mead (``minimise``, the same optimiser as ``optimise_grid``). The result is never
    worse on the training starts than its start. Every named grid and the tuned one are then
    measured on ``held_out`` fresh starts: mean coupled error and its standard error.

    Args:
        model: a ``ModelSpec``, a built-in name, ``module:callable``, or a bare score function
            (then ``sde`` and ``shape``, the shape of one sample, are required).
        solver: a deterministic fixed-grid solver spec, ``name[:key=value...]``.
        nfe: the budget of score evaluations; N = ``solver.steps_for_nfe(nfe)`` >= 3.
        samples, held_out: training and held-out starts (x_T from ``seed``).
        eps: the last evaluation time (default: ``sample``'s).
        on_run: called after every solver run (a progress bar).
        on_held_out: called as on_held_out(label, samples) with the held-out samples of every
            named grid and of the tuned one ("tuned"), for data-side metrics.
    """
    label, spec = _resolve_model(model, sde, shape)
    sde, score = spec.sde, spec.score
    solver_spec = SolverSpec.parse(solver) if isinstance(solver, str) else None
    if solver_spec is None:
        raise TypeError(f"solver must be a spec string like 'unipc', got {type(solver).__name__}")
    if solver_spec.grid is not None:
        raise ValueError(f"solver {solver!r}: leave out grid=, tune_grid chooses the grid")
    method = solver_spec.build()
    if method.stochastic or method.adaptive:
        raise ValueError(
            f"solver: tune_grid needs a deterministic fixed-grid solver (its error is a "
            f"function of the grid alone), got {method.describe()}"
        )
    nfe = check_positive_int("nfe", nfe)
    steps = method.steps_for_nfe(nfe)
    if steps < 3:
        raise ValueError(
            f"nfe = {nfe} gives {steps} steps of {method.describe()}; tuning needs >= 3 (one "
            "free interior time)"
        )
    samples = check_positive_int("samples", samples, minimum=2)
    held_out = check_positive_int("held_out", held_out, minimum=2)
    if init != "best" and init not in GRIDS:
        raise ValueError(f"init must be 'best' or one of {', '.join(GRIDS)}, got {init!r}")
    eps = default_eps(sde) if eps is None else float(eps)
    if sde.reaches_zero_snr():
        raise ValueError("sde: tune_grid does not yet tune paths with m(T) = 0")

    gen = torch.Generator(device).manual_seed(seed)
    x_all = sde.prior_sample((samples + held_out, *spec.shape), gen, device=device)
    cond_all = spec.condition_for(torch.arange(samples + held_out, device=device))
    parts = {
        "train": (x_all[:samples], _rows(cond_all, slice(0, samples))),
        "held": (x_all[samples:], _rows(cond_all, slice(samples, None))),
    }
    teacher_solver = registry.get("ode_dopri5", rtol=TEACHER_TOL, atol=TEACHER_TOL)
    teacher = {
        k: sample(score, sde, x_T=x, solver=teacher_solver, steps=2, eps=eps, condition=c).samples
        for k, (x, c) in parts.items()
    }
    runs = 0

    def distances(grid: Tensor, part: str) -> Tensor:
        nonlocal runs
        runs += 1
        x, c = parts[part]
        out = sample(score, sde, x_T=x, solver=method, time_grid=grid, eps=eps, condition=c)
        if on_run is not None:
            on_run()
        if part == "held" and on_held_out is not None:
            on_held_out(labels.get(id(grid), "tuned"), out.samples)
        d = (out.samples - teacher[part]).reshape(x.shape[0], -1).norm(dim=1).double()
        return d if bool(torch.isfinite(d).all()) else torch.full_like(d, 1e6)

    named = {rule: make_time_grid(sde, steps, rule, eps)[:-1] for rule in GRIDS}
    labels = {id(g): rule for rule, g in named.items()}
    named_train = {rule: float(distances(g, "train").mean()) for rule, g in named.items()}
    start = min(named_train, key=named_train.__getitem__) if init == "best" else init
    grid0 = named[start]
    lam_T, lam_eps = (float(v) for v in _lam(sde, grid0[[0, -1]]))

    def to_grid(theta: np.ndarray) -> Tensor:
        return _grid_from_theta(sde, theta, lam_T, lam_eps, float(grid0[0]), eps, free_end)

    def loss(theta: np.ndarray) -> float:
        return float(distances(to_grid(theta), "train").mean())

    res = minimise(loss, _theta_from_grid(sde, grid0, free_end), max_evaluations)
    best, train_error = to_grid(res.x), float(res.fun)
    if not train_error < named_train[start]:
        best, train_error = grid0, named_train[start]

    def held_out_summary(grid: Tensor) -> list[float]:
        d = distances(grid, "held")
        return [float(d.mean()), float(d.std() / math.sqrt(d.numel()))]

    if best is grid0:  # the tuned grid is its start: measure it under its own name too
        best = grid0.clone()
    tuned_held = held_out_summary(best)
    return TunedGrid(
        grid=best,
        solver=solver_spec.label,
        steps=steps,
        nfe=method.planned_nfe(steps),
        model=label,
        fingerprint=model_fingerprint(spec, device),
        sde=repr(sde),
        objective=f"coupled error to ode_dopri5 rtol=atol={TEACHER_TOL:g}",
        method="Nelder-Mead on softmax increments in log-SNR",
        seed=seed,
        samples=samples,
        held_out=held_out,
        init=start,
        evaluations=runs,
        train_error=train_error,
        held_out_error=tuned_held[0],
        held_out_stderr=tuned_held[1],
        named={rule: held_out_summary(g) for rule, g in named.items()},
    )


def _rows(condition: dict[str, Any] | None, rows: slice) -> dict[str, Any] | None:
    if condition is None:
        return None
    return {
        k: v[rows] if isinstance(v, Tensor) and v.dim() >= 1 else v for k, v in condition.items()
    }
