"""EDM's Heun sampler (with and without churn) and Restart."""

import math

import pytest
import torch
from closed_forms import RecordingNoise, measured_order
from conftest import V, gaussian_score

import scoresde as sd

ORDER_CASES = [
    ("edm_heun", {}, 2),
]


@pytest.mark.parametrize(("name", "options", "order"), ORDER_CASES)
def test_convergence_order(name, options, order):
    slope, errs = measured_order(name, options)
    assert slope == pytest.approx(order, abs=0.3), errs


# -- churn


def test_edm_churn_keeps_the_gaussian_variance():
    # Churn adds and removes noise; on Gaussian data the sample variance must stay V. Measured
    # bias of the variance from discretisation: +0.013 deterministic and +0.041 with this churn
    # at 40 steps, +0.0065 at 160, +0.0025 at 640; at 320 steps it is under the noise.
    sde = sd.VPSDE()
    solver = sd.solvers.EDMHeun(s_churn=40.0, s_tmin=0.05, s_tmax=50.0)
    sol = sd.sample(gaussian_score(sde), sde, (20000, 2), solver=solver, steps=320,
                    time_grid="karras", generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)  # fmt: skip
    # the variance of 40000 normal draws has relative SE sqrt(2/40000) = 0.7 %; 4 SE = 2.8 %
    assert sol.samples.var().item() == pytest.approx(V, rel=0.028)
    assert sol.nfe == 639
    again = sd.sample(gaussian_score(sde), sde, (20000, 2), solver=solver, steps=320,
                      time_grid="karras", generator=torch.Generator().manual_seed(0),
                      dtype=torch.float64)  # fmt: skip
    assert torch.equal(sol.samples, again.samples)


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


# regression test: it failed on the code before its fix (checked by hand when written)
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


# regression test: it failed on the code before its fix (checked by hand when written)
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


# -- Restart


def test_restart_without_restarts_is_edm_heun_and_counts_its_evaluations():
    sde = sd.VPSDE()

    def run(solver, steps=10):
        return sd.sample(gaussian_score(sde), sde, (64, 2), solver=solver, steps=steps,
                         time_grid="karras", generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64)  # fmt: skip

    assert torch.equal(run(sd.solvers.Restart(restarts=0)).samples, run("edm_heun").samples)
    for k, n in [(1, 2), (2, 3), (3, 1)]:
        solver = sd.solvers.Restart(restarts=k, restart_steps=n)
        assert run(solver).nfe == solver.planned_nfe(10) == 19 + 2 * k * n
    assert sd.solvers.Restart().pathwise_limit is None


def test_restart_contracts_the_error_of_a_coarse_ode_run():
    """Gaussian data N(0, V I): Heun with 6 Karras steps ends with variance 1.71 (V = 0.5).
    Restarting [sigma 0.5, 3] K times pulls the state at t_min toward its exact marginal:
    measured 1.71, 0.60, 0.52 for K = 0, 1, 4 (seeds 0 and 1 agree to 0.01). The variance of
    2 x 20000 normal draws has standard error V sqrt(2 / 40000) = 0.0035, so the bounds below
    (0.04 or more from the measured values) are not noise."""
    sde = sd.VPSDE()
    variances = []
    for k in (0, 1, 4):
        solver = sd.solvers.Restart(sigma_min=0.5, sigma_max=3.0, restarts=k, restart_steps=6)
        sol = sd.sample(gaussian_score(sde), sde, (20000, 2), solver=solver, steps=6,
                        time_grid="karras", generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)  # fmt: skip
        variances.append(sol.samples.var().item())
    assert variances[0] > 1.5
    assert abs(variances[1] - V) < 0.15
    assert abs(variances[2] - V) < 0.05 and variances[2] < variances[1]
