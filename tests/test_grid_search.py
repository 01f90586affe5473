"""scoresde.evaluation.grid_search: the optimised time grid."""

import pytest
import torch

import scoresde as sd
from scoresde.evaluation.grid_search import optimise_grid
from scoresde.evaluation.targets import mixture_2d


def test_grid_optimiser_improves_and_round_trips(tmp_path):
    sde = sd.VPSDE(sd.DiscreteSchedule.linear())
    g = mixture_2d()
    res = optimise_grid("dpm_solver++", sde, g, 6, samples=256, max_evaluations=60,
                        objective="rmse")  # fmt: skip
    assert res.error < res.initial_error and res.held_out_error < res.held_out_initial
    grid = res.grid
    assert grid.dtype == torch.float64 and grid.shape == (6,)
    assert grid[0] == sde.T and (grid[1:] < grid[:-1]).all() and grid[-1] >= 1e-3
    path = tmp_path / "grid.pt"
    torch.save(grid, path)
    loaded = torch.load(path)
    score = sd.Score(g.exact_score(sde).eps, sde, "eps")
    sol = sd.sample(score, sde, (16, 2), solver="dpm_solver++", steps=6, time_grid=loaded)
    assert torch.equal(sol.times[:-1], grid) and sol.nfe == 6
    with pytest.raises(ValueError, match="deterministic fixed-grid solver"):
        optimise_grid("euler_maruyama", sde, g, 6)
    with pytest.raises(ValueError, match="unknown objective"):
        optimise_grid("ddim", sde, g, 6, objective="fid")
