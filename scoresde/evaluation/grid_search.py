"""Time grids tuned for a solver at a budget on the user's own model, by gradient descent
through the solver.

``tune_grid`` picks the N evaluation times T = t_0 > ... > t_(N-1) of a deterministic solver by
minimising its coupled error to a converged teacher from the same starts,

    error(grid) = E_(x_T) |x_solver(x_T; grid) - x_teacher(x_T)|,

x_teacher the probability-flow ODE by adaptive Dormand-Prince at tight tolerance, then the same
final step at eps. Which anchor each piece follows:

- The parametrisation (LD3, Tong et al. 2025): the N - 1 times after T are positive
  increments in lambda = log(m / s), a cumulative softmax of logits theta over
  [lambda(T), lambda(eps)], so every candidate is a valid strictly decreasing grid; with
  ``free_end`` one more logit pulls the last time up from eps by a sigmoid share of the span
  (the final denoiser then covers the rest, like a last solver step).
- The objective (LD3; GITS, Chen et al. 2024): the teacher run from the same x_T, about a
  hundred training starts, reported on held-out starts so over-fitting shows.
- The optimiser (LD3): gradient descent (Adam) through the solver itself. ``sample(grad=True)``
  with a grid that requires grad differentiates every coefficient of the solver's plan and
  the network's time input (``scoresde.solvers.plan_scalars``); t(lambda) is the schedule's
  inverse log-SNR, whose derivative is 1 / (d lambda / dt) (the implicit-function rule), so
  the schedule needs no differentiable inverse. The best iterate is kept, so the result is
  never worse on the training starts than its start.
- The start: the named grid with the lowest training error, a named rule, or ``"dp"``, the
  dynamic-programming pick over a fine teacher trajectory of GITS: the N points of a fine
  log-SNR grid that minimise the summed local error of first-order (DDIM) steps between
  them, each step's error measured against the teacher's own states.

An analytic target is just a model with an exact score: ``tune_grid(target.exact_score(sde),
..., sde=sde, shape=(dim,))``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from scoresde.core.checks import check_positive_int
from scoresde.core.grids import GRIDS, make_time_grid
from scoresde.core.sde import SDE
from scoresde.evaluation.specs import SolverSpec
from scoresde.evaluation.tuned_grid import TunedGrid
from scoresde.models import ModelSpec, load_model
from scoresde.models.fingerprint import model_fingerprint
from scoresde.sample import default_eps, sample
from scoresde.solvers import registry
from scoresde.solvers.zero_terminal import ode_end

INITS = ("best", "dp", *GRIDS)
DP_POINTS = 64  # points of the fine log-SNR teacher trajectory of init="dp"


def _lam(sde: SDE, t: Tensor) -> Tensor:
    return 0.5 * sde.log_snr(t)


class GridMap:
    """theta -> the N evaluation times, differentiably (module doc): lambda_i = lambda_T +
    span * cumsum(softmax(theta[:N-1]))_i, span = (lambda_eps - lambda_T) sigmoid(theta[-1])
    with ``free_end`` (else the whole span), and t_i = t(lambda_i) with t(lambda)'s
    derivative 1 / lambda'(t)."""

    def __init__(self, sde: SDE, T: float, eps: float, free_end: bool) -> None:
        self.sde, self.T, self.eps, self.free_end = sde, T, eps, free_end
        # at zero terminal SNR lambda(T) = -inf: the span starts where m = 1e-4 instead, the
        # furthest the limit step from T lands (``zero_terminal``); T itself stays first
        start = min(T, ode_end(sde))
        ends = _lam(sde, torch.tensor([start, eps], dtype=torch.float64))
        self.lam_T, self.lam_eps = float(ends[0]), float(ends[1])

    def lambdas(self, theta: Tensor) -> Tensor:
        span = self.lam_eps - self.lam_T
        logits = theta
        if self.free_end:
            logits, span = theta[:-1], span * torch.sigmoid(theta[-1])
        frac = torch.cumsum(torch.softmax(logits, 0), 0)
        return torch.cat([theta.new_full((1,), self.lam_T), self.lam_T + span * frac])

    def times_of(self, lam: Tensor) -> Tensor:
        """t(lambda) in [eps, T], differentiably: value t0 = t(lambda), derivative
        d t / d lambda = 1 / lambda'(t0)."""
        with torch.no_grad():
            t0 = self.sde.t_from_log_snr(2 * lam).clamp(self.eps, self.T)
        t_req = t0.clone().requires_grad_(True)
        with torch.enable_grad():
            (slope,) = torch.autograd.grad(_lam(self.sde, t_req).sum(), t_req)
        return t0 + (lam - lam.detach()) / slope

    def __call__(self, theta: Tensor) -> Tensor:
        return self.grid_of(self.lambdas(theta))

    def grid_of(self, lam: Tensor) -> Tensor:
        """The grid at the log-SNRs ``lambdas`` gives: t(lambda), with T first (and eps last
        without ``free_end``)."""
        t = self.times_of(lam)
        t = torch.cat([t.new_full((1,), self.T), t[1:]])  # T is fixed
        if not self.free_end:
            t = torch.cat([t[:-1], t.new_full((1,), self.eps)])
        return t

    def theta_of(self, grid: Tensor) -> Tensor:
        """Logits that map back to ``grid`` (its increments in lambda; with ``free_end`` a
        last logit for the share of the span the grid covers, at most 0.98, so that a grid
        ending at eps starts where the end can still move)."""
        lam = _lam(self.sde, grid.detach().to(torch.float64))
        lam[0] = self.lam_T  # T, or the span's start at zero terminal SNR
        inc = torch.diff(lam).clamp_min(1e-12)
        theta = inc.log()
        if not self.free_end:
            return theta
        share = float((lam[-1] - self.lam_T) / (self.lam_eps - self.lam_T))
        share = min(max(share, 1e-6), 0.98)
        return torch.cat([theta, theta.new_full((1,), math.log(share / (1 - share)))])


class DecoupledMap:
    """theta = [grid logits, shifts] -> (grid, network times), LD3's decoupled times
    (``scoresde.core.network_times``): lambda'_i = lambda_i + clamp(shift_i, -w g, w g) for
    the interior times, g the grid's smallest log-SNR gap (held fixed in the derivative) and
    w = WINDOW; the first and the last network time are the grid's own, as in LD3."""

    WINDOW = 0.5  # LD3's window_rate

    def __init__(self, grid_map: GridMap, steps: int) -> None:
        self.map, self.steps = grid_map, steps
        self.split = steps - 1 + int(grid_map.free_end)

    def theta_of(self, grid: Tensor) -> Tensor:
        theta = self.map.theta_of(grid)
        return torch.cat([theta, theta.new_zeros(self.steps)])

    def __call__(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        logits, shift = theta[: self.split], theta[self.split :]
        lam = self.map.lambdas(logits)
        grid = self.map.grid_of(lam)
        reach = self.WINDOW * torch.diff(lam.detach()).abs().min()
        inner = self.map.times_of(lam[1:-1] + torch.clamp(shift[1:-1], -reach, reach))
        return grid, torch.cat([grid[:1], inner, grid[-1:]])


def descend(
    loss: Callable[[Tensor], Tensor], theta0: Tensor, iterations: int, lr: float
) -> tuple[Tensor, float]:
    """The one optimiser of grid tuning: Adam on theta for ``iterations`` steps of the full
    training batch; returns the best iterate seen and its loss. A non-finite loss or gradient
    leaves theta where it was and halves the step size."""
    theta = theta0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=lr)
    best, best_loss = theta0.detach().clone(), math.inf
    for _ in range(iterations):
        opt.zero_grad()
        value = loss(theta)
        if not bool(torch.isfinite(value)):
            for group in opt.param_groups:
                group["lr"] *= 0.5
            continue
        current = float(value.detach())
        if current < best_loss:
            best, best_loss = theta.detach().clone(), current
        value.backward()
        if not bool(torch.isfinite(theta.grad).all()):
            for group in opt.param_groups:
                group["lr"] *= 0.5
            continue
        opt.step()
    return best, best_loss


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
    iterations: int = 200,
    lr: float = 0.05,
    seed: int = 0,
    eps: float | None = None,
    free_end: bool = True,
    network_times: bool = False,
    device: str | torch.device = "cpu",
    on_run: Callable[[], None] | None = None,
    on_held_out: Callable[[str, Tensor], None] | None = None,
    teachers: dict[Any, Any] | None = None,
) -> TunedGrid:
    """The evaluation times at which ``solver`` at ``nfe`` evaluations comes closest to the
    converged probability-flow ODE on ``model``, measured on the model itself (module doc).

    objective(grid) = E |x_solver(x_T; grid) - x_teacher(x_T)|, the coupled error, over
    ``samples`` training starts x_T; x_teacher is the same x_T through the ODE by adaptive
    Dormand–Prince (rtol = atol = TEACHER_TOL), then the same final step at eps. The grid is
    ``GridMap`` of logits theta, started from ``init`` and moved by ``descend`` (Adam through
    the solver, ``iterations`` runs with their backward passes). Every named grid and the
    tuned one are then measured on ``held_out`` fresh starts: mean coupled error and its
    standard error.

    Args:
        model: a ``ModelSpec``, a built-in name, ``module:callable``, or a bare score function
            (then ``sde`` and ``shape``, the shape of one sample, are required; e.g. a
            target's ``exact_score(sde)``).
        solver: a deterministic fixed-grid solver spec, ``name[:key=value...]``, whose plan
            differentiates through its grid (``Solver.differentiable_grid``: ddim,
            ode_euler, ode_heun, dpm_solver, dpm_solver++, deis, unipc, ipndm).
        nfe: the budget of score evaluations; N = ``solver.steps_for_nfe(nfe)`` >= 3.
        samples: training starts; held_out: held-out starts (x_T from ``seed``).
        init: "best" (the named grid with the lowest training error), "dp" (GITS' dynamic
            programme over a fine teacher trajectory) or a named rule (``GRIDS``).
        iterations: gradient steps (one solver run and its backward pass each); lr: Adam's
            step size on the logits.
        eps: the last evaluation time (default: ``sample``'s).
        free_end: let the last time move up from eps.
        network_times: also learn the times at which the model is asked, one per grid time
            (LD3's decoupled times, ``DecoupledMap``); the result's ``network_grid``.
        on_run: called after every solver run (a progress bar).
        on_held_out: called as on_held_out(label, samples) with the held-out samples of every
            named grid and of the tuned one ("tuned"), for data-side metrics.
        teachers: a dict that keeps the teacher runs between calls, keyed by the model's
            fingerprint and the starts (seed, samples, held_out, eps, device): a study of many
            solvers and budgets on one model computes them once.
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
    if not method.differentiable_grid:
        raise ValueError(
            f"solver: {method.describe()} does not differentiate through its grid; tune_grid "
            f"takes {', '.join(registry.differentiable_in_grid())}"
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
    iterations = check_positive_int("iterations", iterations)
    if not (isinstance(lr, float | int) and 0 < lr < 10):
        raise ValueError(f"lr must lie in (0, 10), got {lr!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    eps = default_eps(sde) if eps is None else float(eps)
    if sde.reaches_zero_snr() and init == "dp":
        raise ValueError(
            "init: 'dp' needs x0 = (x - s eps) / m at every fine time, undefined at m(T) = 0 "
            "on this path; use 'best' or a named rule"
        )

    gen = torch.Generator(device).manual_seed(seed)
    x_all = sde.prior_sample((samples + held_out, *spec.shape), gen, device=device)
    cond_all = spec.condition_for(torch.arange(samples + held_out, device=device))
    parts = {
        "train": (x_all[:samples], _rows(cond_all, slice(0, samples))),
        "held": (x_all[samples:], _rows(cond_all, slice(samples, None))),
    }
    fingerprint = model_fingerprint(spec, device)
    key = (fingerprint, seed, samples, held_out, eps, str(device))
    teacher = (teachers or {}).get(key)
    if teacher is None:
        teacher_solver = registry.get("ode_dopri5", rtol=TEACHER_TOL, atol=TEACHER_TOL)
        teacher = {}
        for k, (x, c) in parts.items():
            run = sample(score, sde, x_T=x, solver=teacher_solver, steps=2, eps=eps, condition=c)
            teacher[k] = run.samples
        if teachers is not None:
            teachers[key] = teacher
    runs = 0

    def distances(grid: Tensor, part: str, grad: bool = False, net: Tensor | None = None):
        nonlocal runs
        runs += 1
        x, c = parts[part]
        out = sample(
            score, sde, x_T=x, solver=method, time_grid=grid, eps=eps, condition=c, grad=grad,
            network_times=net,
        )  # fmt: skip
        if on_run is not None:
            on_run()
        if part == "held" and on_held_out is not None:
            on_held_out(labels.get(id(grid), "tuned"), out.samples.detach())
        return (out.samples - teacher[part]).reshape(x.shape[0], -1).norm(dim=1).double()

    def mean_error(grid: Tensor, part: str) -> float:
        d = distances(grid, part)
        return float(d.mean()) if bool(torch.isfinite(d).all()) else math.inf

    named = {rule: make_time_grid(sde, steps, rule, eps)[:-1] for rule in GRIDS}
    labels = {id(g): rule for rule, g in named.items()}
    named_train = {rule: mean_error(g, "train") for rule, g in named.items()}
    if init == "dp":
        x, c = parts["train"]
        grid0 = dp_grid(score, sde, x, c, steps, eps)
        start, start_error = "dp", mean_error(grid0, "train")
    else:
        start = min(named_train, key=named_train.__getitem__) if init == "best" else init
        grid0, start_error = named[start], named_train[start]
    to_grid = GridMap(sde, float(grid0[0]), eps, free_end)
    to_both = DecoupledMap(to_grid, steps) if network_times else None

    def tuned(th: Tensor) -> tuple[Tensor, Tensor | None]:
        """(grid, network times or None) of the logits."""
        return (to_grid(th), None) if to_both is None else to_both(th)

    def train_loss(th: Tensor) -> Tensor:
        grid, net = tuned(th)
        return distances(grid, "train", grad=True, net=net).mean()

    theta0 = (to_grid if to_both is None else to_both).theta_of(grid0)
    theta, train_error = descend(train_loss, theta0, iterations, lr)
    best, best_net = (None if v is None else v.detach() for v in tuned(theta))
    if not train_error < start_error:  # the start itself (theta_of may end it short of eps)
        best, best_net, train_error = grid0.clone(), None, start_error

    def held_out_summary(grid: Tensor, net: Tensor | None = None) -> list[float]:
        d = distances(grid, "held", net=net)
        return [float(d.mean()), float(d.std() / math.sqrt(d.numel()))]

    tuned_held = held_out_summary(best, best_net)
    return TunedGrid(
        grid=best,
        solver=solver_spec.label,
        steps=steps,
        nfe=method.planned_nfe(steps),
        model=label,
        fingerprint=fingerprint,
        sde=repr(sde),
        objective=f"coupled error to ode_dopri5 rtol=atol={TEACHER_TOL:g}",
        method=f"Adam (lr {lr:g}, {iterations} steps) through the solver on softmax "
        "increments in log-SNR" + (", with LD3's decoupled network times" if network_times else ""),
        seed=seed,
        samples=samples,
        held_out=held_out,
        init=start,
        evaluations=runs,
        train_error=train_error,
        held_out_error=tuned_held[0],
        held_out_stderr=tuned_held[1],
        named={rule: held_out_summary(g) for rule, g in named.items()},
        network_grid=best_net,
    )


def dp_grid(
    score: Callable[[Tensor, Tensor], Tensor],
    sde: SDE,
    x_T: Tensor,
    condition: dict[str, Any] | None,
    steps: int,
    eps: float,
    points: int = DP_POINTS,
) -> Tensor:
    """GITS' grid (Chen et al. 2024): the ``steps`` of ``points`` fine times, uniform in
    lambda from T to eps and both ends kept, that minimise the summed local error of DDIM
    steps between consecutive chosen points.

    The teacher trajectory x_j is DPM-Solver++ (order 3) through the fine grid, whose score
    calls give eps_j at each (x_j, t_j). The cost of a step i -> j is the mean over samples of
    |x_hat_j - x_j| with x_hat_j = m_j x0_i + s_j eps_i, x0_i = (x_i - s_i eps_i) / m_i; a
    dynamic programme over (points chosen, last point) finds the cheapest path."""
    fine = make_time_grid(sde, points, "logsnr", eps)[:-1]
    seen: list[Tensor] = []

    def recorded(x: Tensor, t: Tensor) -> Tensor:
        out = score(x, t)
        seen.append(out.detach())
        return out

    run = sample(recorded, sde, x_T=x_T, solver="dpm_solver++", time_grid=fine, eps=eps,
                 condition=condition, return_trajectory=True)  # fmt: skip
    xs = run.trajectory[:points].double().flatten(2)  # states at the fine times
    scores = torch.stack(seen[:points]).double().flatten(2)
    m, s = sde.marginal(fine)
    eps_hat = -s[:, None, None] * scores
    x0 = (xs - s[:, None, None] * eps_hat) / m[:, None, None]
    cost = torch.full((points, points), math.inf, dtype=torch.float64)
    for i in range(points - 1):
        pred = m[i + 1 :, None, None] * x0[i] + s[i + 1 :, None, None] * eps_hat[i]
        cost[i, i + 1 :] = (pred - xs[i + 1 :]).norm(dim=-1).mean(-1)
    # best[k, j]: least cost of a path T -> ... -> j through k + 1 chosen points
    best = torch.full((steps, points), math.inf, dtype=torch.float64)
    back = torch.zeros((steps, points), dtype=torch.long)
    best[0, 0] = 0.0
    for k in range(1, steps):
        total = best[k - 1][:, None] + cost  # (from, to)
        best[k], back[k] = total.min(dim=0)
    path = [points - 1]
    for k in range(steps - 1, 0, -1):
        path.append(int(back[k, path[-1]]))
    return fine[torch.tensor(path[::-1])]


def _rows(condition: dict[str, Any] | None, rows: slice) -> dict[str, Any] | None:
    if condition is None:
        return None
    return {
        k: v[rows] if isinstance(v, Tensor) and v.dim() >= 1 else v for k, v in condition.items()
    }
