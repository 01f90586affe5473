"""Decoupled network times (LD3): the solver steps on its grid while the model is asked at
its own times; sample(network_times=...), their gradient, tuning them, and grid files that
carry them through compare and generate."""

import json
import math

import pytest
import torch
from central_differences import assert_gradient_matches_central_differences
from toy_model import gaussian_model

import scoresde as sd
from scoresde.commands.generate import generate
from scoresde.evaluation.grid_search import DecoupledMap, GridMap
from scoresde.evaluation.targets import mixture_2d

SDE = sd.VPSDE()
EPS = 1e-3


def _start(n=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=gen, dtype=torch.float64), gen


@pytest.mark.parametrize("spec", ["ddim", "ode_heun", "dpm_solver++:order=3", "unipc", "ipndm"])
def test_network_times_equal_to_the_grid_change_nothing(spec):
    x_T, _ = _start()
    score = mixture_2d().exact_score(SDE)
    solver = sd.evaluation.SolverSpec.parse(spec).build()
    grid = sd.make_time_grid(SDE, 6, "logsnr", EPS)[:-1]
    plain = sd.sample(score, SDE, x_T=x_T, solver=solver, time_grid=grid, eps=EPS)
    same = sd.sample(score, SDE, x_T=x_T, solver=solver, time_grid=grid, eps=EPS,
                     network_times=grid.clone())  # fmt: skip
    torch.testing.assert_close(same.samples, plain.samples, rtol=1e-10, atol=1e-10)
    assert same.nfe == plain.nfe


def test_ddim_with_network_times_is_the_ddim_step_on_the_model_at_those_times():
    """DDIM written out: x_(i+1) = m_(i+1) x0 + s_(i+1) (x_i - m_i x0) / s_i with x0 the exact
    denoiser at t'_i instead of t_i, and the final step x0 at t'_(N-1)."""
    x_T, _ = _start()
    target = mixture_2d()
    score = target.exact_score(SDE)
    grid = sd.make_time_grid(SDE, 5, "quadratic", EPS)[:-1]
    net = grid.clone()
    net[1:-1] = grid[1:-1] * torch.tensor([1.3, 0.8, 1.1])
    out = sd.sample(score, SDE, x_T=x_T, solver="ddim", time_grid=grid, eps=EPS,
                    network_times=net)  # fmt: skip

    def x0_at(x, t):
        m, s = SDE.marginal(torch.full((x.shape[0],), float(t), dtype=torch.float64))
        return (x + (s * s)[:, None] * score(x, torch.full_like(m, float(t)))) / m[:, None]

    x = x_T.clone()
    times = [*grid.tolist(), 0.0]
    for i in range(len(grid)):
        x0 = x0_at(x, net[i])
        if times[i + 1] == 0.0:
            x = x0
            break
        (m_i, m_n), (s_i, s_n) = SDE.marginal(torch.tensor([times[i], times[i + 1]]).double())
        x = m_n * x0 + s_n * (x - m_i * x0) / s_i
    # the library's DDIM arranges its coefficients differently: on the plain grid it differs
    # from this written-out form by 4e-8 (measured), so 1e-6 here
    torch.testing.assert_close(out.samples, x, rtol=1e-6, atol=1e-6)
    moved = sd.sample(score, SDE, x_T=x_T, solver="ddim", time_grid=grid, eps=EPS)
    assert float((moved.samples - out.samples).abs().max()) > 1e-3  # the times matter


@pytest.mark.parametrize("spec", ["ode_heun", "dpm_solver++:order=3", "unipc"])
def test_gradient_in_the_network_times_matches_finite_differences(spec):
    """d(sum w x_0)/d(t'_i) by autograd against central differences (step 1e-6 t'_i) in
    float64 on the 2-D mixture's exact score. Measured relative errors: at most 2e-6."""
    x_T, gen = _start()
    w = torch.randn(64, 2, generator=gen, dtype=torch.float64)
    solver = sd.evaluation.SolverSpec.parse(spec).build()
    score = mixture_2d().exact_score(SDE)
    grid = sd.make_time_grid(SDE, 6, "logsnr", EPS)[:-1]

    def f(net, grad=False):
        out = sd.sample(score, SDE, x_T=x_T, solver=solver, time_grid=grid, eps=EPS,
                        grad=grad, network_times=net)  # fmt: skip
        return (out.samples * w).sum()

    net0 = grid.clone()
    net0[1:-1] *= 1.05
    assert_gradient_matches_central_differences(f, net0, rel=5e-5, abs_tol=1e-7, label=spec)


def test_network_times_are_refused_where_they_cannot_apply():
    score = mixture_2d().exact_score(SDE)
    grid = sd.make_time_grid(SDE, 4, "logsnr", EPS)[:-1]
    with pytest.raises(ValueError, match=r"network_times: .* between its grid times"):
        sd.sample(score, SDE, (4, 2), solver="dpm_solver++_single", time_grid=grid,
                  network_times=grid)  # fmt: skip
    with pytest.raises(ValueError, match=r"one time per grid time \(4\), got 3"):
        sd.sample(score, SDE, (4, 2), solver="ddim", time_grid=grid, network_times=grid[:3])
    with pytest.raises(ValueError, match="network_times"):
        sd.sample(score, SDE, (4, 2), solver="ddim", time_grid=grid,
                  network_times=grid * 2)  # fmt: skip


def test_the_decoupled_map_keeps_the_ends_and_moves_the_rest_within_its_window():
    grid0 = sd.make_time_grid(SDE, 6, "logsnr", EPS)[:-1]
    both = DecoupledMap(GridMap(SDE, 1.0, EPS, free_end=True), 6)
    theta = both.theta_of(grid0)
    theta[-6:] = torch.tensor([9.0, 9.0, -9.0, 0.01, -0.02, 9.0], dtype=torch.float64)
    grid, net = both(theta)
    torch.testing.assert_close(grid, both.map(theta[: both.split]))
    assert float(net[0]) == float(grid[0]) and float(net[-1]) == float(grid[-1])
    lam, lam_net = (0.5 * SDE.log_snr(v) for v in (grid, net))
    reach = DecoupledMap.WINDOW * float(torch.diff(lam).abs().min())
    shift = (lam_net - lam)[1:-1]
    assert float(shift.abs().max()) <= reach * (1 + 1e-9)
    torch.testing.assert_close(shift, torch.tensor([reach, -reach, 0.01, -0.02]).double())


@pytest.fixture(scope="module")
def decoupled():
    return sd.tune_grid(gaussian_model(SDE), "dpm_solver++:order=3", 5, samples=64, held_out=256,
                        iterations=30, seed=3, network_times=True)  # fmt: skip


def test_tuning_network_times_beats_every_named_grid_and_round_trips(decoupled, tmp_path):
    assert decoupled.network_grid is not None and decoupled.network_grid.shape == (5,)
    assert decoupled.held_out_error < min(err for err, _ in decoupled.named.values())
    assert "decoupled" in decoupled.method
    back = sd.TunedGrid.load(decoupled.save(tmp_path / "grid.json"))
    assert torch.equal(back.network_grid, decoupled.network_grid)
    options = back.sample_options()
    assert torch.equal(options["network_times"], decoupled.network_grid)
    plain = sd.TunedGrid.load(
        sd.tune_grid(gaussian_model(SDE), "dpm_solver++:order=3", 5, samples=64, held_out=256,
                     iterations=2, seed=3).save(tmp_path / "plain.json")
    )  # fmt: skip
    assert plain.network_grid is None and "network_grid" not in json.loads(
        (tmp_path / "plain.json").read_text()
    )


def test_compare_and_generate_apply_a_grid_files_network_times(decoupled, tmp_path):
    path = decoupled.save(tmp_path / "grid.json")
    spec = f"dpm_solver++:order=3:grid=file:{path}"
    model = gaussian_model(SDE)
    out = generate(model, tmp_path / "gen", num=8, solver=spec, batch_size=8, progress=False,
                   check_model=False)  # fmt: skip
    run = json.loads((tmp_path / "gen" / "run.json").read_text())
    assert run["network_times"] == decoupled.network_grid.tolist()
    solver = sd.solvers.get("dpm_solver++", order=3)
    from scoresde.commands.generate import read_samples
    from scoresde.core.indexed_noise import IndexedNoise

    noise = IndexedNoise(torch.empty(8, 2), torch.arange(8), 0)
    direct = sd.sample(model.score, SDE, x_T=noise.prior(SDE.prior_std), solver=solver,
                       **decoupled.sample_options())  # fmt: skip
    torch.testing.assert_close(torch.as_tensor(read_samples(tmp_path / "gen")),
                               direct.samples.float())  # fmt: skip
    assert out.nfe_per_sample == direct.nfe == 5
    records = sd.compare(targets="gmm2d", solvers=[spec], samples=50, replicates=2)
    again = sd.compare(targets="gmm2d", solvers="dpm_solver++:order=3", time_grid=decoupled,
                       samples=50, replicates=2)  # fmt: skip
    assert math.isclose(records[0].metrics["sw1"], again[0].metrics["sw1"], rel_tol=1e-12)
    plain = sd.compare(targets="gmm2d", solvers="dpm_solver++:order=3",
                       time_grid=decoupled.grid, samples=50, replicates=2)  # fmt: skip
    assert records[0].metrics["sw1"] != plain[0].metrics["sw1"]
