"""What a compare run is asked to do: defaults, the settings of one run, and the
checks of the arguments ``compare`` takes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from scoresde.core.checks import (
    MAX_STEPS,
    check_positive_int,
)
from scoresde.core.schedules import CosineSchedule, DiscreteSchedule, LinearSchedule, NoiseSchedule
from scoresde.solvers import registry

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
SCHEMA_VERSION = 3
METRICS = ("sw1", "mmd", "mean_err", "cov_err", "mode_err", "xent", "coupled")  # analytic targets
MODEL_METRICS = ("sw1", "mmd", "coupled")  # a user's model (plus its evaluator's metrics)
# the other metrics are distances (a solver can only be worse); xent can move either way
TWO_SIDED = ("xent",)


@dataclass(frozen=True)
class CompareSettings:
    """The design of one compare run, checked: n samples in each of ``replicates`` replicates
    from ``seed``, on ``device``/``dtype``; solvers whose spec names no grid use
    ``time_grid``; a model's converged references are ``reference`` (solver, NFE) and
    ``sde_reference`` (solver, steps); ``alpha`` is the family-wise level of the floor tests;
    ``schedule`` labels the records ("model" for a model's own schedule)."""

    schedule: str
    time_grid: str
    samples: int
    replicates: int
    seed: int
    device: torch.device
    dtype: torch.dtype
    reference: tuple[str, int]
    sde_reference: tuple[str, int]
    alpha: float


def names_of(name: str, value: Any) -> list[str]:
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


def check_budgets(nfe: int | str | Iterable[Any]) -> list[int]:
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


def check_reference(name: str, value: Any) -> tuple[str, int]:
    try:
        solver, count = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (solver name, count), got {value!r}") from None
    registry.get(solver)
    return solver, check_positive_int(f"{name} count", count, maximum=MAX_STEPS)
