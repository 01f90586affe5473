"""scoresde.evaluation.grid_search: samples differentiated through the time grid, the grid
map, GITS' dynamic-programming start, and tuning on an analytic target (a model whose score
is exact)."""

import math

import pytest
import torch
from central_differences import assert_gradient_matches_central_differences

import scoresde as sd
from scoresde.evaluation.grid_search import GridMap, dp_grid
from scoresde.evaluation.targets import mixture_2d

SDE = sd.VPSDE()
EPS = 1e-3


def _objective(solver, score, x_T, w, sde=SDE):
    def f(grid, grad=False):
        out = sd.sample(score, sde, x_T=x_T, solver=solver, time_grid=grid, eps=EPS, grad=grad)
        return (out.samples * w).sum()

    return f


def _check_grid_gradient(spec, sde, rel, abs_tol):
    """d(sum w x_0)/d(t_i) by autograd against central differences (step 1e-6 t_i) for
    every t_i after T, in float64 on the 2-D mixture's exact score under ``sde``."""
    gen = torch.Generator().manual_seed(0)
    x_T = torch.randn(64, 2, generator=gen, dtype=torch.float64)
    w = torch.randn(64, 2, generator=gen, dtype=torch.float64)
    solver = sd.evaluation.SolverSpec.parse(spec).build()
    f = _objective(solver, mixture_2d().exact_score(sde), x_T, w, sde)
    g0 = sd.make_time_grid(sde, 6, "logsnr", EPS)[:-1]
    assert_gradient_matches_central_differences(f, g0, rel=rel, abs_tol=abs_tol, label=spec)


@pytest.mark.parametrize(
    "spec",
    [
        "ddim",
        "ode_euler",
        "ode_heun",
        "dpm_solver++:order=3",
        "dpm_solver:order=2",
        "deis:order=3",
        "unipc",
        "unipc:order=3:variant=bh1",
        "ipndm",
        "dpm_solver++:order=2:afs=true",
    ],
)
def test_gradient_of_the_samples_in_the_grid_matches_finite_differences(spec):
    """d(sum w x_0)/d(t_i) by autograd through the solver's plan and the score's time input
    against central differences (step 1e-6 t_i) in float64 on the 2-D mixture's exact score;
    T itself is not perturbed (it is fixed in tuning, and AFS keys on t_0 = T). Measured
    relative errors: at most 9e-6, the differences' own truncation error."""
    _check_grid_gradient(spec, SDE, rel=5e-5, abs_tol=1e-7)


@pytest.mark.parametrize("spec", ["ddim", "ode_heun", "dpm_solver++:order=3", "unipc", "ipndm"])
def test_gradient_in_the_grid_on_a_zero_terminal_snr_path(spec):
    """On rectified flow (m(T) = 0) every solver starts with the limit step T -> t_1, which
    differentiates in its landing time t_1 (``ZeroTerminalStart``), uncorrected (ddim),
    trapezoid-corrected (order 3) or the solver's own (ode_heun): autograd against central
    differences as above. Measured relative errors: at most 1.2e-5."""
    _check_grid_gradient(spec, sd.rectified_flow(), rel=1e-4, abs_tol=1e-6)


def test_tune_grid_on_a_zero_terminal_snr_path():
    """tune_grid on rectified flow: the span of the tuned times starts where m = 1e-4 (T stays
    first), and the tuned grid beats the best named one on held-out starts (measured on the
    2-D mixture, UniPC at 6 NFE: 0.156 against quadratic's 0.241 at seed 0, 0.075 against
    0.264 at seed 1). "dp" needs x0 at T and is refused there."""
    sde = sd.rectified_flow()
    score = mixture_2d().exact_score(sde)
    tuned = sd.tune_grid(score, "unipc", 6, sde=sde, shape=(2,), held_out=512, seed=0)
    grid = tuned.grid
    assert float(grid[0]) == sde.T and bool((grid.diff() < 0).all())
    assert float(sde.marginal(grid[1])[0]) > 1e-4 - 1e-12
    best = min(v[0] for v in tuned.named.values())
    assert tuned.held_out_error < 0.8 * best
    with pytest.raises(ValueError, match="init: 'dp'"):
        sd.tune_grid(score, "unipc", 6, sde=sde, shape=(2,), init="dp")


def test_without_grad_the_grid_builds_no_graph_and_a_solver_that_cannot_is_refused():
    score = mixture_2d().exact_score(SDE)
    g = sd.make_time_grid(SDE, 6, "logsnr", EPS)[:-1].requires_grad_(True)
    out = sd.sample(score, SDE, (8, 2), solver="unipc", time_grid=g, eps=EPS)
    assert not out.samples.requires_grad
    with pytest.raises(ValueError, match="does not differentiate through its time grid"):
        sd.sample(score, SDE, (8, 2), solver="dpm_solver_single", time_grid=g, eps=EPS,
                  grad=True)  # fmt: skip


def test_grid_map_is_monotone_round_trips_and_carries_dt_dlambda():
    grid = sd.make_time_grid(SDE, 7, "karras", EPS)[:-1]
    fixed = GridMap(SDE, SDE.T, EPS, free_end=False)
    back = fixed(fixed.theta_of(grid))
    torch.testing.assert_close(back, grid, rtol=1e-9, atol=1e-12)
    free = GridMap(SDE, SDE.T, EPS, free_end=True)
    theta = torch.randn(7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = free(theta.requires_grad_(True))
    values = t.detach()
    assert values[0] == SDE.T and bool((torch.diff(values) < 0).all()) and values[-1] >= EPS
    # d t_i / d theta equals (d t / d lambda)(t_i) times d lambda_i / d theta: check one entry
    (grad_t,) = torch.autograd.grad(t[3], theta)
    lam = free.lambdas(theta)
    (grad_lam,) = torch.autograd.grad(lam[3], theta)
    t3 = t[3].detach().clone().requires_grad_(True)
    (slope,) = torch.autograd.grad(0.5 * SDE.log_snr(t3), t3)
    torch.testing.assert_close(grad_t, grad_lam / slope)


def test_dp_start_is_a_valid_grid_and_beats_every_named_grid_for_ddim():
    """GITS' pick over a fine teacher trajectory, on the 2-D mixture: a valid grid from T to
    eps on the fine log-SNR points. Its cost is the local error of DDIM steps, so DDIM on it
    is closer to the teacher than on any named grid. Measured coupled errors (256 starts):
    6 steps dp 0.266, best named (quadratic) 0.340; 10 steps 0.141 against 0.192."""
    score = mixture_2d().exact_score(SDE)
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    teacher = sd.sample(score, SDE, x_T=x_T, solver=sd.solvers.get("ode_dopri5", rtol=1e-8,
                        atol=1e-8), steps=2, eps=EPS).samples  # fmt: skip

    def error(g):
        out = sd.sample(score, SDE, x_T=x_T, solver="ddim", time_grid=g, eps=EPS).samples
        return float((out - teacher).norm(dim=1).mean())

    fine = sd.make_time_grid(SDE, 64, "logsnr", EPS)[:-1]
    for steps in (6, 10):
        grid = dp_grid(score, SDE, x_T, None, steps, EPS)
        assert grid.shape == (steps,) and float(grid[0]) == SDE.T and grid[-1] == fine[-1]
        assert bool((torch.diff(grid) < 0).all()) and all(bool((fine == t).any()) for t in grid)
        named = [error(sd.make_time_grid(SDE, steps, r, EPS)[:-1]) for r in sd.core.grids.GRIDS]
        assert error(grid) < 0.85 * min(named), steps


def test_tuning_on_an_analytic_target_improves_on_held_out_starts():
    """The analytic-target case is tune_grid on the mixture's exact score (the former
    optimise_grid): DPM-Solver++(3M) at 6 NFE on the 2-D mixture. Measured held-out coupled
    error (512 starts): tuned 0.104 ± 0.007 against the best named (quadratic) 0.183 ± 0.007
    at seed 0, 0.110 against 0.195 at seed 1."""
    sde = sd.VPSDE(sd.DiscreteSchedule.linear())
    score = mixture_2d().exact_score(sde)
    tuned = sd.tune_grid(score, "dpm_solver++:order=3", 6, sde=sde, shape=(2,), samples=128,
                         held_out=512, iterations=30, seed=0)  # fmt: skip
    best, se = min(tuned.named.values())
    assert tuned.held_out_error + 2 * math.hypot(tuned.held_out_stderr, se) < best
    assert "Adam" in tuned.method
    with pytest.raises(ValueError, match="does not differentiate through its grid"):
        sd.tune_grid(score, "dpm_solver++_single", 6, sde=sde, shape=(2,))
