"""The one sampling driver: grid, prior draw, solver loop, final step, NFE count, Solution."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from scoresde.core.adapters import Score, bind_condition
from scoresde.core.checks import (
    check_generator,
    check_output,
    check_positive_int,
    check_sampling_dtype,
    check_times,
)
from scoresde.core.grids import make_time_grid
from scoresde.core.network_times import RetimedScore
from scoresde.core.noise import NoiseSource, make_noise
from scoresde.core.sde import SDE
from scoresde.solvers import registry
from scoresde.solvers.base import NonFiniteSampleError, Run, Solver, StepCallback
from scoresde.solvers.zero_terminal import (
    check_zero_terminal_model,
    for_path,
    is_zero_terminal,
)

ScoreFn = Callable[[Tensor, Tensor], Tensor]
DEFAULT_STEPS = 1000


@dataclass
class Solution:
    """What a sampling run returns.

    samples: (B, ...) final samples.  nfe: score evaluations actually made.  times: the (N+1,)
    float64 grid (T .. eps, 0).  trajectory: (N+1, B, ...) states at each grid time when asked
    (x_T first).  solver: the solver's description.  stats: solver statistics (e.g. adaptive
    step counts).
    """

    samples: Tensor
    nfe: int
    times: Tensor
    solver: str
    trajectory: Tensor | None = None
    stats: dict[str, Any] = field(default_factory=dict)


class _CountedScore:
    """Counts score evaluations and checks what comes back; no device work, no host sync.

    Every output must be a tensor of x's shape on x's device; a floating output of another
    dtype (a float16/bfloat16 network) is cast to x's dtype, so the sampling state keeps its
    precision. When the score is an eps-adapter, ``eps`` gives the network's raw prediction
    (one evaluation too), so affine solvers can fold -1/s(t) into their precomputed
    coefficients.
    """

    def __init__(self, score: ScoreFn) -> None:
        self.score, self.count = score, 0
        self.checked = isinstance(score, Score)  # an adapter checks its network's output itself
        is_eps = self.checked and score.prediction == "eps"
        self.eps_min_std = score.min_std if is_eps else None

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.count += 1
        out = self._first_call(self.score, x, t) if self.count == 1 else self.score(x, t)
        return out if self.checked else check_output(out, x, "score")

    def eps(self, x: Tensor, t: Tensor) -> Tensor:  # only for adapters (eps_min_std set)
        self.count += 1
        return self._first_call(self.score.eps, x, t) if self.count == 1 else self.score.eps(x, t)

    def x0(self, x: Tensor, t: Tensor) -> Tensor:  # only for models that predict x0 (zero SNR)
        self.count += 1
        out = self._first_call(self.score.x0, x, t) if self.count == 1 else self.score.x0(x, t)
        return out if self.checked else check_output(out, x, "x0")

    @staticmethod
    def _first_call(fn: ScoreFn, x: Tensor, t: Tensor) -> Tensor:
        """fn(x, t), naming the shapes if the network refuses its very first input (a shape
        without the batch dimension is the usual cause)."""
        try:
            return fn(x, t)
        except RuntimeError as e:
            raise RuntimeError(
                f"the score function failed on its first call, with x of shape "
                f"{tuple(x.shape)} and t of shape {tuple(t.shape)}: {e}. "
                "shape must be (B, ...) with the batch dimension first; for a ModelSpec "
                "write (B, *spec.shape), not spec.shape"
            ) from e

    def rows(self, index: Tensor) -> ScoreFn:
        """This counted score on the batch rows ``index`` (per-sample conditions follow)."""
        select = getattr(self.score, "rows", None)  # Score and ConditionedFn
        if select is None:
            return self
        part = select(index)

        def call(x: Tensor, t: Tensor) -> Tensor:
            self.count += 1
            out = part(x, t)
            return out if self.checked else check_output(out, x, "score")

        return call


def default_eps(sde: SDE) -> float:
    """``sample``'s default smallest evaluation time: 1/N for a ``DiscreteSchedule`` of N
    steps (DDPM's first timestep), else 1e-3."""
    schedule = getattr(sde, "schedule", None)
    n = getattr(schedule, "num_timesteps", None)
    return 1.0 / n if n else 1e-3


def _steps_for_nfe(solver: Solver, nfe: int, steps: int | None, time_grid) -> int:
    if steps is not None or isinstance(time_grid, Tensor):
        raise ValueError("give nfe or steps (or a time_grid tensor), not both")
    if solver.adaptive:
        raise ValueError(
            f"nfe: solver {solver.describe()} is adaptive, its cost is not planned; "
            "give its tolerances instead"
        )
    nfe = check_positive_int("nfe", nfe, maximum=10**7)
    steps = solver.steps_for_nfe(nfe)
    if steps < 1:
        raise ValueError(
            f"nfe = {nfe} is below one step of {solver.describe()} "
            f"({solver.planned_nfe(1)} evaluations)"
        )
    return steps


def _make_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator:
    if generator is not None:
        if torch.device(generator.device).type != device.type:
            raise ValueError(
                f"generator is on {generator.device} but samples are on {device}: "
                "pass a generator created on the sampling device"
            )
        return generator
    fresh = torch.Generator(device=device)
    fresh.seed()  # from OS entropy; torch's global RNG is left alone
    return fresh


def sample(
    score: ScoreFn,
    sde: SDE,
    shape: tuple[int, ...] | None = None,
    *,
    x_T: Tensor | None = None,
    solver: str | Solver = "euler_maruyama",
    steps: int | None = None,
    time_grid: str | Tensor = "uniform",
    eps: float | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    denoise: bool = True,
    noise: str | NoiseSource = "gaussian",
    callback: StepCallback | None = None,
    progress: bool = False,
    return_trajectory: bool = False,
    condition: dict[str, Any] | None = None,
    grad: bool = False,
    nfe: int | None = None,
    network_times: Tensor | None = None,
) -> Solution:
    """Draw samples by integrating the reverse SDE / probability-flow ODE of ``sde``.

    Args:
        score: s(x, t) with x (B, ...) and t a (B,) tensor on x's device and dtype.
        sde: the forward SDE (``VPSDE``, ``SubVPSDE``, ``VESDE``, any ``GaussianPath``). On a
            path with m(T) = 0 (zero terminal SNR) the first step is the limit step of
            ``scoresde.solvers.zero_terminal`` (one evaluation), which needs the model's x0
            prediction at T.
        shape: (B, ...) of the samples; the start x_T is drawn from the prior. Or give ``x_T``.
        solver: a name from ``scoresde.solvers.available()`` or a configured solver object.
        steps: N, the number of solver steps (N + 1 grid points, see ``scoresde.core.grids``).
            Default: 1000 with a named grid, the tensor's length with a ``time_grid`` tensor.
        nfe: instead of ``steps``, a budget of score evaluations per sample: N is the largest
            step count whose planned evaluations fit (``solver.steps_for_nfe``; a Heun step
            costs two, its last step one). Not for adaptive solvers, whose cost is not planned.
        time_grid: "uniform", "quadratic", "logsnr", "karras", or a tensor of N evaluation times.
        eps: the smallest evaluation time, in (0, T). Default: 1/N_train for a
            ``DiscreteSchedule`` (DDPM's first timestep), else 1e-3.
        generator: the only source of randomness (prior and noise). Same seed, same device ->
            identical samples. Without one, a generator seeded from OS entropy is used.
        device, dtype: of the samples (default: x_T's, else the generator's device / float32).
        denoise: make the final step eps -> 0 Tweedie's denoiser x0_hat = (x + s^2 score)/m
            (default True for every solver; it costs no extra evaluation except for
            annealed_langevin). With False it is the solver's own noise-free step.
        noise: "gaussian" (independent draws), "brownian" (one Brownian path, consistent across
            step counts) or a ``NoiseSource``.
        callback: called as callback(k, t_next, x) after each step. Fixed-step solvers report
            all N steps (t_next = t_1 .. t_N = 0); adaptive solvers (``ode_dopri5``,
            ``ode_rk45``, ``adaptive_sde``), ``torchsde`` and ``annealed_langevin`` report the
            points they have (the state at eps, each level) and always their final state,
            which is the returned sample.
        progress: show a tqdm progress bar on stderr.
        return_trajectory: keep x_T and every state passed to the callback (memory grows with
            N): (N + 1, B, ...) for fixed-step solvers.
        condition: keyword arguments for the network on every call (class labels,
            ``encoder_hidden_states``, ...): a tensor is per sample with B rows (moved to the
            sample's device), a number or 0-d tensor is broadcast to (B,). See
            ``adapters.bind_condition``; for classifier-free guidance wrap the score in
            ``ClassifierFreeGuidance`` and give the condition here.
        grad: build the autograd graph through the run, so the samples are differentiable in
            the network's parameters, ``x_T``, or a ``time_grid`` tensor that requires grad
            (grid tuning: every coefficient of the plan and the network's time input then
            carry the gradient; solvers with ``differentiable_grid``). Default False: the
            run is under ``torch.no_grad()`` and keeps no graph, whatever ``requires_grad``
            the network's parameters have.
        network_times: (N,) times at which the model is asked for each of the N grid times
            (LD3's decoupled times, ``TunedGrid.network_grid``): the solver steps on the grid
            but uses the model's denoised estimate at network_times[i] for grid time i
            (``scoresde.core.network_times``). Needs a solver that evaluates only on its grid
            (``differentiable_grid``). Default: the grid itself.

    Returns:
        ``Solution``. Raises ``NonFiniteSampleError`` naming the first step whose result
        contains NaN/Inf (checked once at the end; the run is then replayed with the same
        generator state to find the step, so the happy path pays no synchronisation).
    """
    solver = registry.get(solver)
    generator = check_generator("generator", generator)
    if not isinstance(sde, SDE):
        raise TypeError(
            f"sde must be an SDE (VPSDE, SubVPSDE, VESDE, a GaussianPath), got {type(sde).__name__}"
        )
    if not callable(score):
        raise TypeError("score must be callable as score(x, t)")
    if is_zero_terminal(sde):  # m(T) = 0: every solver starts with the limit step
        check_zero_terminal_model(score)
    solver = for_path(solver, sde)
    if x_T is not None:
        if shape is not None and tuple(shape) != tuple(x_T.shape):
            raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape = {tuple(shape)}")
        if x_T.dim() < 1:
            raise ValueError("x_T must have a batch dimension (B, ...)")
        device = x_T.device if device is None else torch.device(device)
        dtype = x_T.dtype if dtype is None else dtype
    elif shape is None:
        raise ValueError("give shape=(B, ...) or x_T")
    device = (
        torch.device(device)
        if device is not None
        else (torch.device(generator.device) if generator is not None else torch.device("cpu"))
    )
    dtype = check_sampling_dtype(dtype or torch.float32)
    eps = default_eps(sde) if eps is None else eps
    if nfe is not None:
        steps = _steps_for_nfe(solver, nfe, steps, time_grid)
    if steps is None and not isinstance(time_grid, Tensor):
        steps = DEFAULT_STEPS
    grid = make_time_grid(sde, steps, time_grid, eps)
    if network_times is not None and not solver.differentiable_grid:
        raise ValueError(
            f"network_times: {solver.describe()} evaluates the model between its grid times; "
            "solvers that evaluate only on the grid: "
            + ", ".join(registry.differentiable_in_grid())
        )
    if grad and grid.requires_grad and not solver.differentiable_grid:
        raise ValueError(
            f"time_grid: {solver.describe()} does not differentiate through its time grid; "
            "solvers that do: " + ", ".join(registry.differentiable_in_grid())
        )
    generator = _make_generator(generator, device)
    start_state = generator.get_state()

    with torch.set_grad_enabled(grad):
        if x_T is None:
            x = sde.prior_sample(tuple(shape), generator=generator, device=device, dtype=dtype)
        else:
            # contiguous: noise is drawn into buffers shaped like x, so strides must not matter
            x = x_T.to(device=device, dtype=dtype).contiguous()
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x_T contains NaN or Inf")
        if condition:
            score = bind_condition(score, condition, x.shape[0], device)
        if network_times is not None:  # both moved to the device once, not on every call
            times = _network_times(network_times, grid, sde).to(device)
            score = RetimedScore(score, sde, grid[:-1].to(device), times)

        def make_run() -> Run:
            counted = _CountedScore(score)
            source = make_noise(noise, x, generator, sde.T) if isinstance(noise, str) else noise
            t_rows = grid.to(device=device, dtype=dtype)[:, None].repeat(1, x.shape[0])
            return Run(sde, counted, source, grid, list(t_rows.unbind(0)), denoise, generator)

        run = make_run()
        trajectory: list[Tensor] = [x.clone()] if return_trajectory else []
        observe = _observer(
            callback, trajectory if return_trajectory else None, progress, run.steps
        )
        try:
            out = solver.integrate(x, run, observe)
        finally:
            if observe is not None and hasattr(observe, "close"):
                observe.close()
        if not bool(torch.isfinite(out).all()):
            generator.set_state(start_state)
            _locate_non_finite(solver, sde, x_T, shape, make_run, x, dtype, device, generator)
        return Solution(
            samples=out,
            nfe=run.score.count,
            times=grid,
            solver=solver.describe(),
            trajectory=torch.stack(trajectory) if return_trajectory else None,
            stats=dict(run.stats),
        )


def _network_times(times: Tensor, grid: Tensor, sde: SDE) -> Tensor:
    """network_times as float64 on the CPU (its graph kept), one per evaluation time, in (0, T]."""
    if not isinstance(times, Tensor):
        raise TypeError(f"network_times must be a tensor, got {type(times).__name__}")
    times = times.to("cpu", torch.float64).flatten()
    if times.numel() != grid.numel() - 1:
        raise ValueError(
            f"network_times must hold one time per grid time ({grid.numel() - 1}), got "
            f"{times.numel()}"
        )
    check_times("network_times", times.detach(), 0.0, sde.T, include_low=False)
    return times


class _Observer:
    def __init__(self, callback, trajectory, bar) -> None:
        self.callback, self.trajectory, self.bar = callback, trajectory, bar

    def __call__(self, k: int, t: float, x: Tensor) -> None:
        if self.trajectory is not None:
            self.trajectory.append(x.clone())
        if self.callback is not None:
            self.callback(k, t, x)
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _observer(callback, trajectory, progress: bool, steps: int) -> _Observer | None:
    if callback is None and trajectory is None and not progress:
        return None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="sampling", unit="step", leave=False)
    return _Observer(callback, trajectory, bar)


def _locate_non_finite(solver, sde, x_T, shape, make_run, x0, dtype, device, generator):
    """Replay the run with a check after every step and raise at the first bad one."""
    if x_T is None:  # redraw the prior to leave the generator where the first run had it
        sde.prior_sample(tuple(shape), generator=generator, device=device, dtype=dtype)
    run = make_run()
    found: list[tuple[int, float]] = []

    def check(k: int, t: float, x: Tensor) -> None:
        if not found and not bool(torch.isfinite(x).all()):
            found.append((k, t))
            raise _Stop

    with contextlib.suppress(_Stop):
        solver.integrate(x0, run, check)
    if found:
        k, t_next = found[0]
        raise NonFiniteSampleError(
            f"NaN/Inf appeared at step {k} of {run.steps} (t = {run.times[k]:.6g} -> "
            f"{t_next:.6g}); check the score function at this time"
        )
    raise NonFiniteSampleError(
        "NaN/Inf in the final samples (not reproduced step by step on replay: the score "
        "function may be non-deterministic)"
    )


class _Stop(Exception):
    pass
