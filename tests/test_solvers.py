import math

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde import metrics
from scoresde.evaluation.targets import GaussianMixture, mixture_2d, mixture_8d

N = 5000
TARGETS = {"gmm2d": mixture_2d(), "gmm8d": mixture_8d()}
CONFIGS = {
    "euler_maruyama": {},
    "reverse_diffusion": {},
    "ddpm_ancestral": {},
    "ode_euler": {},
    "ode_heun": {},
    "ode_rk45": {},
    "ode_dopri5": {},
    "ddim": {},
    "dpm_solver": {},
    "dpm_solver++": {},
    "sde_dpm_solver++": {},
    "edm_heun": {},
    "pc": {},
    "torchsde": {},
    "annealed_langevin": {"steps_per_level": 2},
}
# Slack over the noise floor: measured at 500 steps with n = 5000, every solver but annealed
# Langevin sits within 2.0x the floor of SW1 (most within 1.4x); annealed Langevin, which only
# approaches p_t level by level, at 1.5x with two steps per level (2.1x / 1.8x with one; 3.2x
# with one under the old step size 2e-5).
SW_FACTOR = {"annealed_langevin": 2.5, "pc": 2.5}


@pytest.fixture(scope="module")
def floors(noise_floor):
    return {name: noise_floor(name, N, 3, "mean")[1:] for name in TARGETS}


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("solver", sorted(CONFIGS))
def test_solver_reaches_target(solver, target, floors):
    g, sde = TARGETS[target], sd.VPSDE()
    sol = sd.sample(
        lambda x, t: g.score(x, t, sde),
        sde,
        (N, g.dim),
        solver=sd.solvers.get(solver, **CONFIGS[solver]),
        steps=500,
        generator=torch.Generator().manual_seed(7),
    )
    x = sol.samples
    assert torch.isfinite(x).all()
    ref, floor = floors[target]
    sw = metrics.sliced_wasserstein(x, ref)
    assert sw < SW_FACTOR.get(solver, 2.0) * floor, f"SW1 {sw:.4f} vs floor {floor:.4f}"
    # mode weights: binomial standard error sqrt(w(1-w)/n) <= 0.007; allow 5 of them plus
    # a 0.02 discretisation allowance for the weakest solvers
    w_hat = metrics.mode_weights(x, g)
    tol = 5 * torch.sqrt(g.weights * (1 - g.weights) / N) + 0.02
    assert ((w_hat - g.weights).abs() <= tol).all(), (w_hat, g.weights)
    # mean: standard error of the mean is sqrt(trace(cov)/n) (0.02 in 2-D, 0.05 in 8-D)
    se = math.sqrt(float(torch.trace(g.covariance)) / N)
    assert metrics.mean_error(x, g) < 4 * se + 0.03
    assert metrics.covariance_error(x, g) < 0.12


def _gaussian_flow(x_T, sde, mu, var, t):
    """Exact probability-flow map for N(mu, var) data: x_t - m_t mu scales with the std of p_t."""
    T = torch.tensor(sde.T, dtype=torch.float64)
    (m_T, s_T), (m_t, s_t) = sde.marginal(T), sde.marginal(torch.tensor(t, dtype=torch.float64))
    ratio = torch.sqrt(m_t**2 * var + s_t**2) / torch.sqrt(m_T**2 * var + s_T**2)
    return m_t * mu + ratio * (x_T - m_T * mu)


def _slope(steps, errors):
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


@pytest.mark.slow
def test_heun_converges_at_order_two_and_euler_at_order_one():
    sde, mu, var = sd.VPSDE(), 0.7, 0.25
    g = GaussianMixture([1.0], [[mu]], [[var]])
    x_T = torch.randn(256, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = _gaussian_flow(x_T, sde, mu, var, 1e-3)
    steps = [20, 40, 80, 160]
    errs = {"ode_heun": [], "ode_euler": []}
    for name in errs:
        for n in steps:
            sol = sd.sample(
                lambda x, t: g.score(x, t, sde),
                sde,
                x_T=x_T,
                solver=name,
                steps=n,
                return_trajectory=True,
            )
            errs[name].append(float((sol.trajectory[-2] - exact).abs().max()))
    assert _slope(steps, errs["ode_heun"]) == pytest.approx(2.0, abs=0.3), errs
    assert _slope(steps, errs["ode_euler"]) == pytest.approx(1.0, abs=0.3), errs


@pytest.mark.slow
def test_euler_maruyama_strong_convergence_with_brownian_paths():
    # additive noise (g depends on t only): Euler–Maruyama's strong order is 1
    sde, g = sd.VPSDE(), GaussianMixture([1.0], [[0.7]], [[0.25]])
    score = lambda x, t: g.score(x, t, sde)  # noqa: E731

    def run(n):
        sol = sd.sample(
            score,
            sde,
            (512, 1),
            solver="euler_maruyama",
            steps=n,
            noise="brownian",
            generator=torch.Generator().manual_seed(3),
            dtype=torch.float64,
            return_trajectory=True,
        )
        return sol.trajectory[-2]

    ref = run(2560)
    steps = [20, 40, 80, 160]
    errs = [float((run(n) - ref).pow(2).mean().sqrt()) for n in steps]
    assert _slope(steps, errs) == pytest.approx(1.0, abs=0.3), errs


def test_ddpm_ancestral_equals_reference_ddpm_loop():
    n_train = 50
    sched = sd.DiscreteSchedule.linear(n_train, 1e-3, 0.2)
    sde = sd.VPSDE(sched)

    def eps_net(x, label):  # any deterministic function of (x, integer timestep)
        return torch.tanh(x) * (label.to(x.dtype) / n_train).view(-1, 1, 1) + 0.1 * x

    for variance in ("posterior", "beta"):
        shape = (8, 2, 3)
        gen = torch.Generator().manual_seed(11)
        x = torch.randn(shape, generator=gen, dtype=torch.float64)
        ab = sched.alphas_cumprod
        for i in reversed(range(n_train)):
            e = eps_net(x, torch.full((8,), i))
            ab_t, ab_prev = ab[i], (ab[i - 1] if i > 0 else torch.tensor(1.0, dtype=torch.float64))
            alpha, beta = ab_t / ab_prev, 1 - ab_t / ab_prev
            mean = (x - beta / torch.sqrt(1 - ab_t) * e) / torch.sqrt(alpha)
            var = (1 - ab_prev) / (1 - ab_t) * beta if variance == "posterior" else beta
            x = (
                mean + torch.sqrt(var) * torch.randn(shape, generator=gen, dtype=torch.float64)
                if i > 0
                else mean
            )
        score = sd.score_from_eps(eps_net, sde, time_label=sd.discrete_index(n_train))
        sol = sd.sample(
            score,
            sde,
            shape,
            solver=sd.solvers.DDPMAncestral(variance),
            steps=n_train,
            generator=torch.Generator().manual_seed(11),
            dtype=torch.float64,
        )
        assert sol.nfe == n_train
        torch.testing.assert_close(
            sol.times[:-1], torch.arange(n_train, 0, -1, dtype=torch.float64) / n_train
        )
        torch.testing.assert_close(sol.samples, x, rtol=1e-10, atol=1e-10)


def test_torchsde_equals_euler_maruyama_on_the_same_brownian_path():
    g, sde = mixture_2d(), sd.VPSDE()
    score = lambda x, t: g.score(x, t, sde)  # noqa: E731
    out = {}
    for name in ("euler_maruyama", "torchsde"):
        out[name] = sd.sample(
            score,
            sde,
            (64, 2),
            solver=name,
            steps=40,
            noise="brownian",
            generator=torch.Generator().manual_seed(5),
            dtype=torch.float64,
        )
    torch.testing.assert_close(
        out["torchsde"].samples, out["euler_maruyama"].samples, rtol=1e-6, atol=1e-6
    )


def test_brownian_noise_converges_pathwise_across_step_counts():
    g, sde = mixture_2d(), sd.VPSDE()
    score = lambda x, t: g.score(x, t, sde)  # noqa: E731

    def run(n, noise):
        return sd.sample(
            score, sde, (400, 2), steps=n, noise=noise, generator=torch.Generator().manual_seed(9)
        ).samples

    same_path = (run(50, "brownian") - run(1000, "brownian")).norm(dim=1).median()
    independent = (run(50, "gaussian") - run(1000, "gaussian")).norm(dim=1).median()
    # measured: 0.05 against 1.4 for independent noise
    assert same_path < 0.15 * independent


def test_determinism():
    g, sde = mixture_2d(), sd.VPSDE()
    score = lambda x, t: g.score(x, t, sde)  # noqa: E731
    for solver in ("euler_maruyama", "pc", "ddpm_ancestral", "annealed_langevin"):
        a = sd.sample(
            score, sde, (32, 2), solver=solver, steps=20, generator=torch.Generator().manual_seed(1)
        )
        b = sd.sample(
            score, sde, (32, 2), solver=solver, steps=20, generator=torch.Generator().manual_seed(1)
        )
        c = sd.sample(
            score, sde, (32, 2), solver=solver, steps=20, generator=torch.Generator().manual_seed(2)
        )
        assert torch.equal(a.samples, b.samples)
        assert not torch.allclose(a.samples, c.samples)


def test_global_rng_untouched():
    g, sde = mixture_2d(), sd.VPSDE()
    torch.manual_seed(0)
    before = torch.get_rng_state()
    sd.sample(lambda x, t: g.score(x, t, sde), sde, (8, 2), steps=5, solver="pc")
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize("shape", [(6,), (6, 3), (6, 2, 4, 4)])
@pytest.mark.parametrize(
    "solver",
    ["euler_maruyama", "ddpm_ancestral", "ode_heun", "pc", "torchsde", "ode_rk45", "ode_dopri5"],
)
def test_shapes_and_time_argument(shape, solver):
    d = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    g, sde = GaussianMixture([1.0], torch.zeros(1, d), torch.ones(1, d) * 0.5), sd.VPSDE()
    seen = []

    def score(x, t):
        seen.append((t.shape, t.dtype, t.device))
        return g.score(x, t, sde)

    sol = sd.sample(
        score, sde, shape, solver=solver, steps=4, generator=torch.Generator().manual_seed(0)
    )
    assert sol.samples.shape == shape
    assert all(s == ((6,), torch.float32, torch.device("cpu")) for s in seen)
    assert sol.nfe == len(seen)


def test_nfe_accounting():
    g, sde = mixture_2d(), sd.VPSDE()
    score = lambda x, t: g.score(x, t, sde)  # noqa: E731
    for solver, expected in [
        ("euler_maruyama", 10),
        ("ode_heun", 19),
        ("pc", 19),
        ("annealed_langevin", 11),
    ]:
        sol = sd.sample(score, sde, (4, 2), solver=solver, steps=10)
        assert sol.nfe == expected == sd.solvers.get(solver).planned_nfe(10)
    pc2 = sd.solvers.PredictorCorrector(corrector_steps=2)
    assert sd.sample(score, sde, (4, 2), solver=pc2, steps=10).nfe == 28


def test_time_grids():
    sde = sd.VPSDE()
    for rule in sd.grids.GRIDS:
        t = sd.make_time_grid(sde, 10, rule, 1e-3)
        assert t.shape == (11,)
        assert t[0] == 1.0 and t[-2] == pytest.approx(1e-3) and t[-1] == 0.0
        assert (torch.diff(t) < 0).all()
    lam = sde.log_snr(sd.make_time_grid(sde, 10, "logsnr")[:-1])
    torch.testing.assert_close(
        torch.diff(lam), torch.full((9,), float(lam[1] - lam[0]), dtype=torch.float64)
    )
    user = torch.tensor([0.9, 0.5, 0.1])
    torch.testing.assert_close(
        sd.make_time_grid(sde, None, user), torch.tensor([0.9, 0.5, 0.1, 0.0], dtype=torch.float64)
    )


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"solver": "nope"}, ValueError, "known solvers: adaptive_sde, annealed_langevin, ddim"),
        ({"steps": 0}, ValueError, "steps must be an integer in \\[1, 1,000,000\\]"),
        ({"steps": 2.5}, TypeError, "steps must be an integer"),
        ({"eps": 0.0}, ValueError, r"eps must lie in \(0, T\)"),
        ({"eps": 1.0}, ValueError, r"eps must lie in \(0, T\)"),
        ({"x_T": torch.zeros(3, 2)}, ValueError, "x_T has shape"),
        ({"time_grid": torch.tensor([0.5, 0.7])}, ValueError, "strictly decreasing"),
        (
            {"time_grid": torch.tensor([1.5, 0.7]), "steps": None},
            ValueError,
            r"time_grid must lie in \(0, 1\]",
        ),
        ({"time_grid": "cubic"}, ValueError, "known: uniform, quadratic, logsnr, karras"),
        ({"noise": "pink"}, ValueError, "known: gaussian, brownian"),
    ],
)
def test_bad_input(kwargs, err, match):
    with pytest.raises(err, match=match):
        sd.sample(lambda x, t: -x, sd.VPSDE(), (4, 2), **{"steps": 5, **kwargs})


def test_non_finite_score_is_reported_with_step_and_time():
    def score(x, t):
        return torch.where(t[:, None] < 0.5, torch.full_like(x, float("nan")), -x)

    with pytest.raises(sd.NonFiniteSampleError, match=r"step 5 of 10 \(t = 0\.445 -> 0\.334\)"):
        sd.sample(score, sd.VPSDE(), (4, 2), steps=10, generator=torch.Generator().manual_seed(0))


def test_subvp_and_ve_run_with_every_langevin_solver():
    g = mixture_2d()
    for sde in (sd.SubVPSDE(), sd.VESDE()):
        for solver in ("pc", "annealed_langevin"):
            sol = sd.sample(
                lambda x, t, sde=sde: g.score(x, t, sde),
                sde,
                (200, 2),
                solver=solver,
                steps=100,
                generator=torch.Generator().manual_seed(0),
            )
            assert torch.isfinite(sol.samples).all()


def test_third_party_solver_registration():
    class Identity(sd.solvers.Solver):
        name = "identity_test"

        def step(self, x, k, run, plan):
            run.score(x, run.t[k])
            return x

    sd.solvers.register("identity_test", Identity)
    assert "identity_test" in sd.solvers.available()
    x_T = torch.ones(3, 2)
    sol = sd.sample(
        lambda x, t: -x, sd.VPSDE(), x_T=x_T, solver="identity_test", steps=3, denoise=False
    )
    assert torch.equal(sol.samples, x_T) and sol.nfe == 3
    with pytest.raises(ValueError, match="registered already"):
        sd.solvers.register("identity_test", Identity)
