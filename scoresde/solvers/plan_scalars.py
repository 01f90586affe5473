"""The host scalars of a run's plan: Python floats, or 0-d float64 tensors that carry the
autograd graph back to the time grid.

A solver computes its per-step constants (alpha_k, sigma_k, lambda_k, phi-functions,
interpolation weights) on the host from the float64 grid. Normally they are Python floats.
When the grid itself is differentiated (``sample(..., grad=True)`` with a ``time_grid`` tensor
that requires grad, as ``tune_grid`` does), they are 0-d CPU tensors instead, so that
d(samples)/d(grid) flows through every coefficient as well as through the network's time
input. The same code serves both: ``+ - * /`` and ``**`` work on either kind, and the few
functions below pick math/numpy or torch by the kind of their arguments. A 0-d CPU tensor
multiplies a tensor on any device without a host-device synchronisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

Scalar = float | Tensor


def scalars(values: Tensor) -> list[Any]:
    """The entries of a 1-D float64 tensor as plan scalars: 0-d tensors in the graph when
    ``values`` requires grad (and grad mode is on), Python floats otherwise."""
    if values.requires_grad and torch.is_grad_enabled():
        return list(values.unbind(0))
    return values.tolist()


def is_traced(*values: Any) -> bool:
    """True when any value is a tensor (the plan is being differentiated)."""
    return any(isinstance(v, Tensor) for v in values)


def expm1(z: Scalar) -> Scalar:
    """e^z - 1 without cancellation, for a float or a 0-d tensor."""
    return torch.expm1(z) if isinstance(z, Tensor) else math.expm1(z)


def exp(z: Scalar) -> Scalar:
    """e^z for a float or a 0-d tensor."""
    return torch.exp(z) if isinstance(z, Tensor) else math.exp(z)


def value(z: Scalar) -> float:
    """The float value of a plan scalar (for branching on its size; never in the graph)."""
    return float(z.detach()) if isinstance(z, Tensor) else float(z)


def matrix(rows: Sequence[Sequence[Scalar]]) -> Any:
    """A matrix from rows of plan scalars: a float64 tensor if any entry is one, else numpy."""
    flat = [v for row in rows for v in row]
    if is_traced(*flat):
        return torch.stack([torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in row])
                            for row in rows])  # fmt: skip
    return np.asarray(rows, dtype=np.float64)


def inverse(m: Any) -> Any:
    """The inverse of a square matrix from ``matrix``."""
    return torch.linalg.inv(m) if isinstance(m, Tensor) else np.linalg.inv(m)


def solve(m: Any, b: Sequence[Scalar]) -> list[Scalar]:
    """x with m x = b, as plan scalars."""
    if isinstance(m, Tensor) or is_traced(*b):
        m = torch.as_tensor(m, dtype=torch.float64)
        vec = torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in b])
        return list(torch.linalg.solve(m, vec).unbind(0))
    return np.linalg.solve(m, np.asarray(b, dtype=np.float64)).tolist()


def row_times(c: Sequence[Scalar], m: Any) -> list[Scalar]:
    """The row vector c times the matrix m, as plan scalars."""
    if isinstance(m, Tensor) or is_traced(*c):
        m = torch.as_tensor(m, dtype=torch.float64)
        row = torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in c])
        return list((row @ m).unbind(0))
    return (np.asarray(c, dtype=np.float64) @ m).tolist()
