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

from dataclasses import dataclass

import numpy as np
import scipy.optimize
import torch
from torch import Tensor

from scoresde.core.adapters import Score
from scoresde.core.checks import check_positive_int
from scoresde.core.grids import make_time_grid
from scoresde.core.sde import SDE
from scoresde.evaluation.metrics import sliced_wasserstein
from scoresde.evaluation.targets import GaussianMixture
from scoresde.likelihood import decode
from scoresde.sample import sample
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
    res = scipy.optimize.minimize(
        loss,
        theta0,
        method="Nelder-Mead",
        options={"maxfev": max_evaluations, "xatol": 1e-3, "fatol": 1e-7, "adaptive": True},
    )
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
