"""Solvers by name. ``register`` adds third-party solvers (``unregister`` removes them); ``get``
builds one by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from scoresde.solvers.base import Solver

_REGISTRY: dict[str, Callable[..., Solver]] = {}


def register(name: str, factory: Callable[..., Solver], *, overwrite: bool = False) -> None:
    """Make ``factory(**options)`` available as ``solver=name``."""
    if not isinstance(name, str) or not name:
        raise ValueError("solver name must be a non-empty string")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"a solver named {name!r} is registered already (pass overwrite=True)")
    _REGISTRY[name] = factory


def unregister(name: str) -> None:
    """Remove the solver registered as ``name`` (a ValueError if none is)."""
    if name not in _REGISTRY:
        raise ValueError(f"no solver named {name!r} is registered")
    del _REGISTRY[name]


def available() -> list[str]:
    """The registered solver names, sorted."""
    return sorted(_REGISTRY)


def differentiable_in_grid() -> list[str]:
    """The registered solvers whose default configuration differentiates its samples through
    the time grid (``Solver.differentiable_grid``), sorted."""
    return [name for name in available() if get(name).differentiable_grid]


def get(solver: str | Solver, **options: Any) -> Solver:
    """A configured solver: an instance is returned as is, a name is built with ``options``."""
    if isinstance(solver, Solver):
        if options:
            raise ValueError("solver options go to the solver's constructor, not with an instance")
        return solver
    if isinstance(solver, type) and issubclass(solver, Solver):
        raise TypeError(
            f"solver must be a name or a solver instance, got the class {solver.__name__}: "
            f"write {solver.__name__}(...) to configure it, or pass its name as a string"
        )
    if not isinstance(solver, str) or solver not in _REGISTRY:
        raise ValueError(f"unknown solver {solver!r}; known solvers: {', '.join(available())}")
    factory = _REGISTRY[solver]
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    if params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params))
        if unknown:
            allowed = ", ".join(params) or "none"
            raise ValueError(
                f"solver {solver!r} has no option {', '.join(map(repr, unknown))}; "
                f"its options: {allowed}"
            )
    return factory(**options)
