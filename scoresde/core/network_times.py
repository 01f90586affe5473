"""Decoupled network times (LD3, Tong et al. 2025): the solver steps on its grid
t_0 > ... > t_(N-1), while the model is asked at its own times t'_0, ..., t'_(N-1).

Every solver formula uses the model's denoised estimate at the grid time t_i; here that
estimate is the one the model gives at t'_i, and the score follows from it at t_i:

    x0'(x, t_i)    = x0_hat(x, t'_i),   x0_hat(x, t) = (x + s(t)^2 score(x, t)) / m(t)
    score'(x, t_i) = (m(t_i) x0'(x, t_i) - x) / s(t_i)^2

(LD3's solvers call the data-prediction model at their second time vector the same way).
With t' = t this is the score itself. ``tune_grid(..., network_times=True)`` learns t' with
the grid; ``sample(network_times=...)`` applies it. Only for solvers whose every evaluation
lies on the grid (the multistep and Heun-type solvers of ``differentiable_grid``): an
evaluation is matched to the grid time nearest to it.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from scoresde.core.checks import broadcast_time
from scoresde.core.sde import SDE


class RetimedScore:
    """``score`` with the model asked at ``network_times[i]`` wherever the solver evaluates
    at ``grid[i]`` (module doc). grid, network_times: (N,) times in (0, T]; t of a call is a
    (B,) tensor, each entry matched to its nearest grid time on the device (no host sync).
    Both may carry autograd graphs (grid tuning)."""

    def __init__(self, score: Any, sde: SDE, grid: Tensor, network_times: Tensor) -> None:
        if grid.shape != network_times.shape or grid.dim() != 1:
            raise ValueError(
                f"network_times must have the grid's shape {tuple(grid.shape)}, got "
                f"{tuple(network_times.shape)}"
            )
        self.score, self.sde = score, sde
        self.grid, self.network_times = grid, network_times
        self._inner_x0 = getattr(score, "x0", None)

    def _model_x0(self, x: Tensor, t: Tensor) -> Tensor:
        if callable(self._inner_x0):
            return self._inner_x0(x, t)
        m, s = self.sde.marginal(t)
        m, s = broadcast_time(m, x), broadcast_time(s, x)
        return (x + s * s * self.score(x, t)) / m

    def x0(self, x: Tensor, t: Tensor) -> Tensor:
        """x0'(x, t): the model's denoised estimate at the network time of t's grid point."""
        grid = self.grid.detach().to(device=t.device, dtype=t.dtype)
        index = (grid[None, :] - t.detach()[:, None]).abs().argmin(dim=1)
        t_net = self.network_times.to(device=t.device)[index].to(t.dtype)
        return self._model_x0(x, t_net)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        m, s = self.sde.marginal(t)
        m, s = broadcast_time(m, x), broadcast_time(s, x)
        return (m * self.x0(x, t) - x) / (s * s)
