"""Regression tests for solver bugs, each against an independent reference.

Every test here failed on the code before its fix (checked by hand when written).
"""

import math
from types import SimpleNamespace

import pytest
import torch

import scoresde as sd
from scoresde.core.noise import GaussianNoise

V = 0.5  # variance of the Gaussian data N(0, V I) used below


def gaussian_score(sde, var=V):
    """Exact score of p_t for data N(0, var I): -x / (m^2 var + s^2)."""

    def score(x, t):
        m, s = sde.marginal(t)
        return -x / (m * m * var + s * s).reshape(-1, *([1] * (x.dim() - 1)))

    return score


class RecordingNoise:
    """Gaussian noise that keeps every draw (in order) so a reference loop can replay it."""

    def __init__(self, like, seed=0):
        self.inner = GaussianNoise(like, torch.Generator().manual_seed(seed))
        self.draws = []

    def __call__(self, t, t_next):
        self.draws.append(self.inner(t, t_next).clone())
        return self.draws[-1]

    def normal(self):
        self.draws.append(self.inner.normal().clone())
        return self.draws[-1]


# --- 1. the Langevin corrector's per-step alpha ------------------------------------------


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


# --- 2. DDIM's eta on every SDE ------------------------------------------------------------


@pytest.mark.parametrize("sde_name", ["vp_linear", "subvp", "ve"])
def test_ddim_noise_is_eta_times_the_posterior_std(sde_name):
    from conftest import ALL_SDES

    sde = ALL_SDES[sde_name]()
    t = torch.tensor([0.9, 0.5, 0.1], dtype=torch.float64)
    t_next = torch.tensor([0.8, 0.3, 0.02], dtype=torch.float64)
    eta = 0.7
    _, _, c = sd.solvers.DDIM(eta=eta).coefficients(sde, t, t_next)
    # independent: x_t' = m' x0 + s' e1, x_t = (m/m') x_t' + sqrt(s^2 - (m s'/m')^2) e2;
    # Var(x_t' | x_t, x0) by Gaussian conditioning on the joint covariance of (x_t', x_t)
    m, s = sde.marginal(t)
    m2, s2 = sde.marginal(t_next)
    r = m / m2
    cov12 = r * s2**2
    post_var = s2**2 - cov12**2 / s**2
    torch.testing.assert_close(c, eta * post_var.sqrt(), rtol=1e-10, atol=0)
    assert bool((c > 0).all())


def test_ddim_eta_one_on_ve_is_k_diffusion_ancestral_euler():
    sde = sd.VESDE()
    score = gaussian_score(sde)
    x_T = sde.prior_sample((64, 3), generator=torch.Generator().manual_seed(1))
    noise = RecordingNoise(x_T)
    sol = sd.sample(
        score,
        sde,
        x_T=x_T.double(),
        solver=sd.solvers.DDIM(eta=1.0),
        steps=12,
        time_grid="karras",
        noise=noise,
        denoise=False,
        generator=torch.Generator().manual_seed(0),
    )
    # k-diffusion's sample_euler_ancestral on the VE sigmas, with the same draws
    sigmas = sde.marginal(sol.times)[1].tolist()
    x = x_T.double()
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = x + s * s * score(x, torch.full((64,), float(sol.times[i]), dtype=x.dtype))
        up = min(s_next, math.sqrt(s_next**2 * (s**2 - s_next**2) / s**2))
        down = math.sqrt(s_next**2 - up**2)
        x = x + (x - denoised) / s * (down - s)
        if i < len(sigmas) - 2:  # no noise on the last step
            x = x + noise.draws[i].double() * up
    torch.testing.assert_close(sol.samples, x, rtol=1e-10, atol=1e-10)


# --- 3. adaptive_sde on samples of shape (B,) ------------------------------------------------


def test_adaptive_sde_rank_one_samples_take_their_own_steps():
    """Shape (B,) must behave as (B, 1): one accept/reject decision per sample."""
    g = sd.targets.mixture_2d()
    sde = sd.VPSDE()

    def score(x, t):
        flat = x.reshape(x.shape[0], 1)
        return g.score(torch.cat([flat, torch.zeros_like(flat)], 1), t, sde)[:, :1].reshape(x.shape)

    def run(shape):
        return sd.sample(
            score,
            sde,
            shape,
            solver="adaptive_sde",
            steps=2,
            generator=torch.Generator().manual_seed(5),
        )

    a, b = run((256,)), run((256, 1))
    assert a.stats["accepted_max"] > a.stats["accepted_mean"]  # samples differ in step count
    torch.testing.assert_close(a.samples, b.samples.reshape(256), rtol=1e-6, atol=1e-6)
    assert a.stats == b.stats


# --- 4. EDM Heun's churn -----------------------------------------------------------------


def k_diffusion_heun(x, sigmas, denoiser, draws, s_churn, s_tmin, s_tmax, s_noise=1.0):
    """k-diffusion's sample_heun (EDM Algorithm 2), written from the paper; sigmas end at 0."""
    n = len(sigmas) - 1
    draws = iter(draws)
    for i in range(n):
        gamma = min(s_churn / n, 2**0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.0
        sigma_hat = sigmas[i] * (gamma + 1)
        if gamma > 0:
            x = x + next(draws) * s_noise * (sigma_hat**2 - sigmas[i] ** 2) ** 0.5
        d = (x - denoiser(x, sigma_hat)) / sigma_hat
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - denoiser(x_2, sigmas[i + 1])) / sigmas[i + 1]
            x = x + (d + d_2) / 2 * dt
    return x


@pytest.mark.parametrize("steps", [6, 18])
def test_edm_heun_churn_matches_edm_algorithm_2(steps):
    """VE (x~ = x, sigma~ = sigma): EDM's loop with the exact Gaussian denoiser
    D(x; sigma) = V / (V + sigma^2) x. Churn on every step, the last one included; S_tmax
    below sigma_max / (1 + gamma) so that every sigma^ stays inside the SDE's range."""
    sde = sd.VESDE()
    x_T = sde.prior_sample((200, 4), generator=torch.Generator().manual_seed(2)).double()
    noise = RecordingNoise(x_T)
    s_tmax = sde.sigma_max / math.sqrt(2)
    solver = sd.solvers.EDMHeun(s_churn=40.0, s_tmin=0.0, s_tmax=s_tmax, s_noise=1.003)
    sol = sd.sample(
        gaussian_score(sde),
        sde,
        x_T=x_T,
        solver=solver,
        steps=steps,
        time_grid="karras",
        noise=noise,
        generator=torch.Generator().manual_seed(0),
    )
    sigmas = [*sde.marginal(sol.times[:-1])[1].tolist(), 0.0]
    churned = sum(s <= s_tmax for s in sigmas[:-1])
    assert 2 <= churned < steps and len(noise.draws) == churned  # the last step churns too
    ref = k_diffusion_heun(
        x_T,
        sigmas,
        lambda x, s: V / (V + s * s) * x,
        [z.double() for z in noise.draws],
        40.0,
        0.0,
        s_tmax,
        1.003,
    )
    torch.testing.assert_close(sol.samples, ref, rtol=1e-9, atol=1e-9)


def test_edm_heun_churns_the_first_step_unless_capped():
    """On VP, sigma^ = sigma(T)(1 + gamma) lies above the SDE's range; the denoiser there is
    k-diffusion's: eps evaluated at T on x^ / sqrt(1 + sigma^^2)."""
    sde = sd.VPSDE()
    x_T = sde.prior_sample((100, 2), generator=torch.Generator().manual_seed(4)).double()
    score = gaussian_score(sde)

    def run(cap):
        noise = RecordingNoise(x_T)
        solver = sd.solvers.EDMHeun(s_churn=10.0, cap_sigma_hat=cap)
        sol = sd.sample(
            score,
            sde,
            x_T=x_T,
            solver=solver,
            steps=5,
            time_grid="karras",
            noise=noise,
            generator=torch.Generator().manual_seed(0),
        )
        return sol, noise.draws

    sol, draws = run(False)
    assert len(draws) == 5
    _, capped_draws = run(True)
    assert len(capped_draws) == 4  # no churn at sigma(T) when capped

    m, s = sde.marginal(sol.times)
    sigmas = [*(s[:-1] / m[:-1]).tolist(), 0.0]
    t_of = dict(zip(sigmas[:-1], sol.times[:-1].tolist(), strict=True))
    t_T = float(sol.times[0])

    def marg(t):
        return (float(v) for v in sde.marginal(torch.tensor(t, dtype=torch.float64)))

    def denoiser(xs, sigma):  # D(x~; sigma) from the eps "network" exp(x_in, t)
        t = t_of.get(sigma)
        if t is None and sigma > sigmas[0]:  # above the range: k-diffusion's convention
            t, x_in = t_T, xs / math.sqrt(1 + sigma * sigma)
        elif t is None:
            t = float(sde.t_from_log_snr(torch.tensor(-2 * math.log(sigma), dtype=torch.float64)))
            x_in = xs * next(marg(t))
        else:
            x_in = xs * next(marg(t))
        tt = torch.full((xs.shape[0],), t, dtype=xs.dtype)
        eps = -list(marg(t))[1] * score(x_in, tt)
        return xs - sigma * eps

    ref = k_diffusion_heun(
        x_T / float(m[0]), sigmas, denoiser, [z.double() for z in draws], 10.0, 0.0, math.inf
    )
    torch.testing.assert_close(sol.samples, ref, rtol=1e-8, atol=1e-8)


# --- 5. denoise=False is the solver's own last step ---------------------------------------------


def own_last_step_ve(name, x, sig_s, sig_0, d):
    """The expected own step eps -> 0 on VE (alpha = 1) from x at sigma_s to sigma_0 > 0."""
    if name == "sde_dpm_solver++":  # mean of the SDE step: (s0/ss)^2 x + (1 - (s0/ss)^2) D
        q = (sig_0 / sig_s) ** 2
        return q * x + (1 - q) * d(x, sig_s)
    if name == "edm_heun":  # Heun from sigma_s to sigma_0
        eps1 = (x - d(x, sig_s)) / sig_s
        x2 = x + (sig_0 - sig_s) * eps1
        eps2 = (x2 - d(x2, sig_0)) / sig_0
        return x + (sig_0 - sig_s) * (eps1 + eps2) / 2
    # every ODE exponential integrator: first order (DDIM) to sigma_0
    return d(x, sig_s) + sig_0 * (x - d(x, sig_s)) / sig_s


@pytest.mark.parametrize(
    "name", ["dpm_solver", "dpm_solver++", "dpm_solver_single", "sde_dpm_solver++", "edm_heun"]
)
def test_denoise_false_takes_the_solvers_own_last_step(name):
    sde = sd.VESDE()
    x_T = sde.prior_sample((300, 2), generator=torch.Generator().manual_seed(6)).double()

    def run(denoise):
        return sd.sample(
            gaussian_score(sde),
            sde,
            x_T=x_T,
            solver=name,
            steps=8,
            time_grid="karras",
            denoise=denoise,
            return_trajectory=True,
            generator=torch.Generator().manual_seed(0),
        )

    own, den = run(False), run(True)
    torch.testing.assert_close(own.trajectory[-2], den.trajectory[-2])  # same path up to eps
    _, sig = sde.marginal(own.times)
    sig_s, sig_0 = float(sig[-2]), float(sig[-1])
    assert sig_0 == pytest.approx(sde.sigma_min)
    expected = own_last_step_ve(
        name, own.trajectory[-2], sig_s, sig_0, lambda x, s: V / (V + s * s) * x
    )
    torch.testing.assert_close(own.samples, expected, rtol=1e-9, atol=1e-9)
    # the denoised run ends at D(x; sigma_eps) instead, sigma_min eps_hat away
    assert float((own.samples - den.samples).abs().max()) > 1e-4


@pytest.mark.parametrize(
    "name", ["dpm_solver", "dpm_solver++", "dpm_solver_single", "sde_dpm_solver++", "edm_heun"]
)
def test_on_vp_the_own_last_step_is_the_denoiser(name):
    """On VP, sigma(0) = 0 and alpha(0) = 1: every method's own step to 0 is Tweedie's."""
    sde = sd.VPSDE()
    x_T = sde.prior_sample((50, 2), generator=torch.Generator().manual_seed(6)).double()
    out = [
        sd.sample(
            gaussian_score(sde),
            sde,
            x_T=x_T,
            solver=name,
            steps=8,
            denoise=dn,
            generator=torch.Generator().manual_seed(0),
        ).samples
        for dn in (False, True)
    ]
    torch.testing.assert_close(out[0], out[1], rtol=1e-10, atol=1e-10)


# --- 6. annealed Langevin's step rule and its defaults ----------------------------------------


class OnesNoise:
    """z = 1 everywhere: with a zero score, x after the run is the sum of sqrt(2 e_i)."""

    def __init__(self, like):
        self.ones = torch.ones_like(like)

    def __call__(self, t, t_next):
        return self.ones

    def normal(self):
        return self.ones


@pytest.mark.parametrize("sde_name", ["vp_linear", "subvp", "ve"])
@pytest.mark.parametrize(("steps_per_level", "step_size"), [(1, 5e-5), (3, 2e-5)])
def test_annealed_langevin_step_rule_is_ncsn(sde_name, steps_per_level, step_size):
    """e_i = step_size (s(t_i) / sigma_ref)^2, steps_per_level steps each: exact, so a rule
    off by a factor of 2 (or a level skipped) fails."""
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
    _, s = sde.marginal(sol.times[:-1])
    expected = steps_per_level * torch.sqrt(2 * step_size * (s / 0.01) ** 2).sum()
    torch.testing.assert_close(
        sol.samples, torch.full_like(x_T, float(expected)), rtol=1e-12, atol=0
    )
    assert sol.nfe == 7 * steps_per_level


@pytest.mark.slow
@pytest.mark.parametrize("target", ["gmm2d", "gmm8d"])
def test_annealed_langevin_at_200_evaluations_is_near_the_floor(target):
    """Measured with the defaults at n = 4000 over seeds 1-3 and the linear, discrete and
    cosine schedules: 1.7-2.4x the median exact-vs-exact floor; the old step size (2e-5) gave
    3.8x, and half the new one 2.6-2.9x. Bound 3x, as the issue asks."""
    from scoresde import metrics
    from scoresde.evaluation.targets import TARGETS

    g, sde, n = TARGETS[target](), sd.VPSDE(), 4000
    ref = g.sample(n, torch.Generator().manual_seed(101))
    floor = sorted(
        metrics.sliced_wasserstein(g.sample(n, torch.Generator().manual_seed(200 + i)), ref)
        for i in range(5)
    )[2]
    sol = sd.sample(
        lambda x, t: g.score(x, t, sde),
        sde,
        (n, g.dim),
        solver="annealed_langevin",
        steps=200,
        generator=torch.Generator().manual_seed(1),
    )
    assert sol.nfe == 201
    assert metrics.sliced_wasserstein(sol.samples, ref) < 3.0 * floor
