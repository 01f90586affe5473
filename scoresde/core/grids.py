"""Time grids for sampling: where the score is evaluated between T and eps.

A grid for ``steps`` = N is a float64 CPU tensor of N + 1 strictly decreasing times

    T = t_0 > t_1 > ... > t_{N-1} = eps > t_N = 0.

The score is evaluated at t_0 .. t_{N-1} (never at 0); the last step, eps -> 0, is noise-free
and by default is Tweedie's denoiser (see ``scoresde.sample``). The rules place the N
evaluation times:

    uniform     t_i = T + i/(N-1) (eps - T)
    quadratic   t_i = eps + (T - eps) (1 - i/(N-1))^2            (dense near eps; DDIM's)
    logsnr      uniform in log-SNR lambda between lambda(T) and lambda(eps)
    karras      sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho
                with sigma = exp(-lambda/2) (= sqrt((1 - alpha_bar)/alpha_bar) for VP), rho = 7

On a path with zero terminal SNR (m(T) = 0: lambda(T) = -inf, sigma(T) = inf) logsnr and karras
keep t_0 = T and place t_1 .. t_(N-1) by their rule between the uniform grid's t_1 =
T - (T - eps)/(N - 1) and eps. The first step, T -> t_1, is the zero-SNR limit step, whose
error O(m(t_1)^2) then shrinks with N (a fixed start such as EDM's sigma_max = 80 would leave
an error that no step count removes).

A user tensor of evaluation times (strictly decreasing, inside (0, T]) is accepted as is; 0 is
appended. With a ``DiscreteSchedule`` of N steps, ``uniform`` and eps = 1/N put the
evaluations exactly on DDPM's timesteps i/N.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scoresde.core.checks import MAX_STEPS, check_positive_int, check_times
from scoresde.core.sde import SDE

GridRule = Callable[[SDE, int, float], Tensor]


def _fraction(steps: int) -> Tensor:
    """i/(N-1) for i = 0..N-1 (just [0] when N = 1)."""
    if steps == 1:
        return torch.zeros(1, dtype=torch.float64)
    return torch.linspace(0.0, 1.0, steps, dtype=torch.float64)


def uniform_grid(sde: SDE, steps: int, eps: float) -> Tensor:
    return sde.T + _fraction(steps) * (eps - sde.T)


def quadratic_grid(sde: SDE, steps: int, eps: float) -> Tensor:
    return eps + (sde.T - eps) * (1 - _fraction(steps)) ** 2


def _pin_ends(t: Tensor, sde: SDE, eps: float) -> Tensor:
    t[0] = sde.T
    if t.numel() > 1:
        t[-1] = eps
    return t


def _from_start(rule: Callable[[float, int], Tensor], sde: SDE, steps: int, eps: float) -> Tensor:
    """rule(start, points) on [eps, start]: from T, or on a zero-SNR path T first and then
    N - 1 points from the uniform grid's t_1 (module doc)."""
    if not sde.reaches_zero_snr():
        return _pin_ends(rule(sde.T, steps), sde, eps)
    if steps <= 2:
        return uniform_grid(sde, steps, eps)
    start = float(uniform_grid(sde, steps, eps)[1])
    inner = rule(start, steps - 1)
    inner[0] = start
    if inner.numel() > 1:
        inner[-1] = eps
    return torch.cat([torch.tensor([sde.T], dtype=torch.float64), inner])


def logsnr_grid(sde: SDE, steps: int, eps: float) -> Tensor:
    def rule(start: float, points: int) -> Tensor:
        lam_t, lam_eps = sde.log_snr(torch.tensor([start, eps], dtype=torch.float64))
        return sde.t_from_log_snr(lam_t + _fraction(points) * (lam_eps - lam_t))

    return _from_start(rule, sde, steps, eps)


def karras_sigmas(
    sigma_max: float | Tensor, sigma_min: float | Tensor, points: int, rho: float = 7.0
) -> Tensor:
    """Karras et al.'s ``points`` noise levels from sigma_max down to sigma_min (float64):
    sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho."""
    hi = torch.as_tensor(sigma_max, dtype=torch.float64) ** (1 / rho)
    lo = torch.as_tensor(sigma_min, dtype=torch.float64) ** (1 / rho)
    return (hi + _fraction(points) * (lo - hi)) ** rho


def karras_grid(sde: SDE, steps: int, eps: float, rho: float = 7.0) -> Tensor:
    def rule(start: float, points: int) -> Tensor:
        sig_max, sig_min = sde.sigma(torch.tensor([start, eps], dtype=torch.float64))
        return sde.t_from_sigma(karras_sigmas(sig_max, sig_min, points, rho))

    return _from_start(rule, sde, steps, eps)


GRIDS: dict[str, GridRule] = {
    "uniform": uniform_grid,
    "quadratic": quadratic_grid,
    "logsnr": logsnr_grid,
    "karras": karras_grid,
}


def make_time_grid(
    sde: SDE, steps: int | None, time_grid: str | Tensor = "uniform", eps: float = 1e-3
) -> Tensor:
    """The (N + 1,) float64 grid T = t_0 > ... > t_{N-1} = eps > t_N = 0 (see module doc).

    ``time_grid`` is a rule name (``GRIDS``) or a tensor of N evaluation times; with a tensor,
    ``steps`` may be None or must equal its length. A tensor that requires grad stays in the
    autograd graph.
    """
    if isinstance(time_grid, Tensor):
        # a grid that requires grad keeps its graph: sample(grad=True) differentiates in it
        t = time_grid.to("cpu", torch.float64).flatten()
        if t.numel() < 1:
            raise ValueError("time_grid tensor must hold at least one time")
        check_times("time_grid", t.detach(), 0.0, sde.T, include_low=False)
        if t.numel() > 1 and not bool((torch.diff(t.detach()) < 0).all()):
            raise ValueError("time_grid must be strictly decreasing (from T towards 0)")
        if steps is not None and steps != t.numel():
            raise ValueError(f"steps = {steps} does not match the time_grid length {t.numel()}")
    else:
        if time_grid not in GRIDS:
            raise ValueError(f"unknown time_grid {time_grid!r}; known: {', '.join(GRIDS)}")
        steps = check_positive_int("steps", steps, maximum=MAX_STEPS)
        if not (0.0 < float(eps) < sde.T):
            raise ValueError(f"eps must lie in (0, T) = (0, {sde.T:g}), got {eps}")
        t = GRIDS[time_grid](sde, steps, float(eps))
        if t.numel() > 1 and not bool((torch.diff(t) < 0).all()):
            raise ValueError(
                f"the {time_grid} grid with steps = {steps} and eps = {eps} is not strictly "
                "decreasing (too many steps for the float64 resolution of this schedule)"
            )
    return torch.cat([t, t.new_zeros(1)])
