"""Langevin dynamics: the Langevin corrector, predictor-corrector and annealed Langevin."""

from types import SimpleNamespace

import pytest
import torch
from conftest import V, gaussian, gaussian_score

import scoresde as sd
from scoresde import metrics
from scoresde.core.noise import GaussianNoise
from scoresde.evaluation.targets import mixture_2d

# -- the Langevin corrector's per-step alpha


# regression test: it failed on the code before its fix (checked by hand when written)
def test_langevin_step_alpha_is_one_minus_beta_on_the_ddpm_grid():
    n = 1000
    schedule = sd.DiscreteSchedule.linear(n)
    sde = sd.VPSDE(schedule)
    grid = sd.grids.make_time_grid(sde, n, "uniform", 1 / n)  # t_j = (n - j)/n, then 0
    snr = 0.16
    plan = sd.solvers.LangevinCorrector(snr=snr).prepare(SimpleNamespace(sde=sde, grid=grid))
    betas = schedule.betas.double()
    # grid index j sits at DDPM timestep i = n - j (1-based), whose alpha_i = 1 - beta_i
    for j in (1, 2, 500, 998, 999):
        expected = 2 * (1 - float(betas[n - j - 1])) * snr**2
        assert plan[j] == pytest.approx(expected, rel=1e-9), j
    assert all(p < 2 * snr**2 for p in plan[1:-1])  # alpha < 1 on VP (entry N is unused)


def test_pc_alpha_options_by_formula():
    from types import SimpleNamespace

    sde = sd.VPSDE()
    grid = sd.grids.make_time_grid(sde, 10, "uniform", 1e-3)
    ab = sde.marginal(grid)[0].pow(2)
    fake = SimpleNamespace(sde=sde, grid=grid)
    snr = 0.2
    plans = {a: sd.solvers.LangevinCorrector(snr=snr, alpha=a).prepare(fake)
             for a in ("step", "alpha_bar", "one")}  # fmt: skip
    assert plans["one"][1:] == pytest.approx([2 * snr**2] * 10)
    assert plans["alpha_bar"] == pytest.approx((2 * snr**2 * ab).tolist())
    assert plans["step"][1:-1] == pytest.approx((2 * snr**2 * ab[1:-1] / ab[2:]).tolist())


# regression test: it failed on the code before its fix (checked by hand when written)
def test_langevin_corrector_alone_reaches_the_marginal_variance():
    """Many corrector steps at a fixed t from a wrong start reach Var = m^2 V + s^2.

    ULA with step e on N(0, v) settles at v / (1 - e / (2v)); with batch norms
    e ~ 2 alpha snr^2 v, so at snr = 0.1 the bias is <= 1 %. The variance estimate over
    B d = 2000 x 16 values has a relative s.e. of sqrt(2 / 32000) = 0.8 %: tolerance 4 %.
    An identity corrector stays at the start's variance, 5x off.
    """
    sde = sd.VPSDE()
    t_val, b, d = 0.3, 2000, 16
    gen = torch.Generator().manual_seed(3)
    x = 2.0 * torch.randn(b, d, generator=gen, dtype=torch.float64)
    grid = torch.tensor([0.6, t_val, t_val - 0.001, 0.0], dtype=torch.float64)
    t_row = torch.full((b,), t_val, dtype=torch.float64)
    run = sd.solvers.base.Run(
        sde, gaussian_score(sde), GaussianNoise(x, gen), grid, [t_row] * 4, True, gen
    )
    corrector = sd.solvers.LangevinCorrector(snr=0.1, steps=2000)
    out = corrector.correct(x, 1, run, corrector.prepare(run))
    m, s = (float(v) for v in sde.marginal(t_val))
    assert float(out.var()) == pytest.approx(m * m * V + s * s, rel=0.04)


# -- predictor-corrector


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        {"predictor": "euler_maruyama"},
        {"predictor": "ddpm_ancestral"},
        {"predictor": "reverse_diffusion", "alpha": "one"},
        {"predictor": "reverse_diffusion", "snr": 0.1, "corrector_steps": 2},
    ],
)
def test_predictor_corrector_options_reach_the_target(options, median_floors):
    """8-D mixture (norms concentrate), 300 steps: measured 1.0-1.7x the floor."""
    g, ref, floor = median_floors["8d"]
    sde = sd.VPSDE()
    solver = sd.solvers.PredictorCorrector(**options)
    sol = sd.sample(g.exact_score(sde), sde, (3000, g.dim), solver=solver,
                    steps=300, generator=torch.Generator().manual_seed(8))  # fmt: skip
    assert sol.nfe == solver.planned_nfe(300)
    assert metrics.sliced_wasserstein(sol.samples, ref) < 2.5 * floor


@pytest.mark.slow
def test_pc_per_sample_norms_in_high_dimension():
    """norms="sample" is meant for high-dimensional data, where the norms concentrate (on the
    8-D mixture it lands at 3.5x the floor). On N(0, 0.5 I) in 256-D, 300 steps: measured
    variance 0.519 (batch norms 0.511); Langevin's own bias at snr 0.16 is about
    alpha snr^2 = 2.6 %, the estimate's s.e. 0.6 %: bound 6 %."""
    sde = sd.VPSDE()
    score, _ = gaussian(sde)
    solver = sd.solvers.PredictorCorrector(norms="sample")
    assert not solver.batch_coupled
    sol = sd.sample(score, sde, (1000, 256), solver=solver, steps=300, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(4))  # fmt: skip
    assert float(sol.samples.var()) == pytest.approx(V, rel=0.06)


def test_subvp_and_ve_run_with_every_langevin_solver():
    g = mixture_2d()
    for sde in (sd.SubVPSDE(), sd.VESDE()):
        for solver in ("pc", "annealed_langevin"):
            sol = sd.sample(
                g.exact_score(sde),
                sde,
                (200, 2),
                solver=solver,
                steps=100,
                generator=torch.Generator().manual_seed(0),
            )
            assert torch.isfinite(sol.samples).all()


# -- annealed Langevin's step rule and its defaults


class OnesNoise:
    """z = 1 everywhere: with a zero score, x after the run is the sum of sqrt(2 e_i)."""

    def __init__(self, like):
        self.ones = torch.ones_like(like)

    def __call__(self, t, t_next):
        return self.ones

    def normal(self):
        return self.ones


# regression test: it failed on the code before its fix (checked by hand when written)
@pytest.mark.parametrize("sde_name", ["vp_linear", "subvp", "ve"])
@pytest.mark.parametrize(("steps_per_level", "step_size"), [(1, 5e-5), (3, 2e-5)])
def test_annealed_langevin_step_rule_is_ncsn(sde_name, steps_per_level, step_size):
    """e_i = step_size (s(t_i) / sigma_ref)^2, steps_per_level steps each, and the sample
    carried in y = x / m between levels (x <- (m_i / m_(i-1)) x): exact, so a rule off by a
    factor of 2, a level skipped or a missing carry fails."""
    from conftest import ALL_SDES

    sde = ALL_SDES[sde_name]()
    x_T = torch.zeros(3, 2, dtype=torch.float64)
    solver = sd.solvers.AnnealedLangevin(steps_per_level, step_size=step_size, sigma_ref=0.01)
    sol = sd.sample(
        lambda x, t: torch.zeros_like(x),
        sde,
        x_T=x_T,
        solver=solver,
        steps=7,
        denoise=False,
        noise=OnesNoise(x_T),
        generator=torch.Generator(),
    )
    m, s = sde.marginal(sol.times[:-1])
    kicks = steps_per_level * torch.sqrt(2 * step_size * (s / 0.01) ** 2)
    expected = 0.0
    for i in range(len(kicks)):
        expected = expected * float(m[i] / m[i - 1] if i else 1.0) + float(kicks[i])
    torch.testing.assert_close(
        sol.samples, torch.full_like(x_T, float(expected)), rtol=1e-12, atol=0
    )
    assert sol.nfe == 7 * steps_per_level


# regression test: it failed on the code before its fix (checked by hand when written)
@pytest.mark.slow
@pytest.mark.parametrize("target", ["gmm2d", "gmm8d"])
def test_annealed_langevin_at_200_evaluations_is_near_the_floor(target, noise_floor):
    """Measured with the defaults at n = 4000 over seeds 1-3 and the linear, discrete and
    cosine schedules: 1.7-2.4x the median exact-vs-exact floor; the old step size (2e-5) gave
    3.8x, and half the new one 2.6-2.9x. Bound 3x, as the issue asks."""
    n, sde = 4000, sd.VPSDE()
    g, ref, floor = noise_floor(target, n, 5, "median")
    sol = sd.sample(
        g.exact_score(sde),
        sde,
        (n, g.dim),
        solver="annealed_langevin",
        steps=200,
        generator=torch.Generator().manual_seed(1),
    )
    assert sol.nfe == 201
    assert metrics.sliced_wasserstein(sol.samples, ref) < 3.0 * floor
