"""The denoising loss against closed forms on Gaussian data, and its equivalences.

Data x_0 ~ N(mu, diag v) in 4 dimensions. Given x_t = m x_0 + s eps, x_0 | x_t is Gaussian with
mean mu + m v (x_t - m mu) / (m^2 v + s^2) and variance V = v s^2 / (m^2 v + s^2) (Gaussian
conditioning), so the optimal predictor of any target a x_0 + b eps is its conditional mean and
its expected squared error is (a - b m / s)^2 V. The expected loss of each weighting is then the
integral over the time proposal of its weight, stated as each anchor states it, times that
error, by quadrature here; the loss function's Monte Carlo mean must match it within 4 standard
errors.
"""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

import scoresde as sd
from scoresde.core.preconditioning import EDMDenoiser, EDMPreconditioning
from scoresde.training import (
    Importance,
    LogitNormal,
    LogNormal,
    MinSNR,
    Uniform,
    denoising_loss,
)

MU = torch.tensor([0.5, -1.0, 0.0, 2.0], dtype=torch.float64)
VAR = torch.tensor([0.25, 1.0, 0.04, 2.0], dtype=torch.float64)
PRE = EDMPreconditioning()


def _coefs(sde, t):
    t = torch.as_tensor(t, dtype=torch.float64)
    m, s = sde.marginal(t)
    dm, ds = sde.marginal_rate(t)
    return m, s, dm, ds


def optimal(sde, prediction):
    """The exact optimal network of ``prediction`` for the Gaussian data (label = t, or
    c_noise for edm)."""

    def net(x, label):
        if prediction == "edm":
            sigma = torch.exp(4 * label)
            t = sde.t_from_sigma(sigma)
            x_t = sd.core.checks.broadcast_time(sde.marginal(t)[0], x) * (
                x / sd.core.checks.broadcast_time(PRE.c_in(sigma), x)
            )
        else:
            t, x_t = label, x
        m, s, dm, ds = (c[:, None] for c in _coefs(sde, t))
        x0 = MU + m * VAR * (x_t - m * MU) / (m**2 * VAR + s**2)
        eps = (x_t - m * x0) / s
        return {
            "eps": eps,
            "x0": x0,
            "v": m * eps - s * x0,
            "flow": dm * x0 + ds * eps,
            "score": -eps / s,
            "edm": (x0 - PRE.c_skip(s / m) * x_t / m) / PRE.c_out(s / m),
        }[prediction]

    return net


def target_error(sde, prediction, t):
    """E |optimal - target|^2 per dimension at time t: (a - b m/s)^2 V averaged over dims."""
    m, s, dm, ds = (float(c) for c in _coefs(sde, t))
    var = (VAR * s**2 / (m**2 * VAR + s**2)).mean().item()
    a, b = {
        "eps": (0.0, 1.0),
        "x0": (1.0, 0.0),
        "v": (-s, m),
        "flow": (dm, ds),
        "score": (0.0, -1.0 / s),
    }.get(prediction, (None, None))
    if prediction == "edm":
        return var / float(PRE.c_out(torch.tensor(s / m))) ** 2
    return (a - b * m / s) ** 2 * var


def integrand(sde, prediction, weighting, t):
    """The anchor's weight times the optimal error, at time t."""
    m, s, _, _ = (float(c) for c in _coefs(sde, t))
    snr = m * m / (s * s)
    if weighting == "simple":
        return target_error(sde, prediction, t)
    if weighting == "sigma2":  # score_sde: s^2 |s_hat - grad log p|^2
        return s**2 * target_error(sde, "score", t)
    if weighting == "likelihood":  # score_sde: g^2 |s_hat - grad log p|^2
        g2 = float(sde.diffusion(torch.tensor(t, dtype=torch.float64))) ** 2
        return g2 * target_error(sde, "score", t)
    if weighting == "min_snr":  # Hang et al.: on the eps error, or on v's (VP)
        if prediction == "eps":
            return min(snr, 5.0) / snr * target_error(sde, "eps", t)
        if prediction == "v":
            return min(snr, 5.0) / (snr + 1) * target_error(sde, "v", t)
        return min(snr, 5.0) * target_error(sde, "x0", t)
    if weighting == "edm":  # EDM: lambda(sigma) |D - x_0|^2
        sigma = torch.tensor(s / m, dtype=torch.float64)
        return float(PRE.weight(sigma)) * target_error(sde, "x0", t)
    raise AssertionError(weighting)


def expected(sde, prediction, weighting, sampler):
    """The closed-form expected loss: the integral of ``integrand`` over the proposal."""
    f = lambda t: integrand(sde, prediction, weighting, t)  # noqa: E731
    if sampler == "discrete":
        n = sde.schedule.num_timesteps
        return float(np.mean([f(i / n) for i in range(1, n + 1)]))
    if isinstance(sampler, Uniform | Importance):  # importance estimates the uniform integral
        lo, hi = sampler.interval(sde)
        breaks = np.geomspace(lo, hi, 12)[1:-1]
        val, _ = integrate.quad(f, lo, hi, points=breaks, limit=400, epsabs=0, epsrel=1e-9)
        return val / (hi - lo)
    if isinstance(sampler, LogNormal):
        lo, hi = sampler.interval(sde)
        sig = sde.sigma(torch.tensor([lo, hi], dtype=torch.float64))

        def over_z(z):
            sigma = min(max(math.exp(sampler.p_mean + sampler.p_std * z), sig[0]), sig[1])
            return f(float(sde.t_from_sigma(torch.tensor(float(sigma), dtype=torch.float64))))

        return integrate.quad(lambda z: over_z(z) * stats.norm.pdf(z), -9, 9, limit=400)[0]
    if isinstance(sampler, LogitNormal):
        lo, hi = sampler.interval(sde)

        def over_u(u):
            return f(min(max(1 / (1 + math.exp(-(sampler.loc + sampler.scale * u))), lo), hi))

        return integrate.quad(lambda u: over_u(u) * stats.norm.pdf(u), -9, 9, limit=400)[0]
    raise AssertionError(sampler)


def mc_loss(sde, prediction, weighting, sampler, n=200_000, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x0 = MU + VAR.sqrt() * torch.randn(n, 4, generator=gen, dtype=torch.float64)
    loss = denoising_loss(
        optimal(sde, prediction), sde, x0, prediction=prediction, weighting=weighting,
        t_sampler=sampler, generator=gen, preconditioning=PRE,
    )  # fmt: skip
    return loss


CASES = {
    "vp-eps-simple-uniform": (lambda: sd.VPSDE(), "eps", "simple", Uniform()),
    "vp-x0-sigma2-uniform": (lambda: sd.VPSDE(), "x0", "sigma2", Uniform(t_min=1e-3)),
    "vp-v-minsnr-uniform": (lambda: sd.VPSDE(), "v", "min_snr", Uniform()),
    "vp-eps-minsnr-uniform": (lambda: sd.VPSDE(), "eps", "min_snr", Uniform()),
    "vp-score-likelihood-importance": (lambda: sd.VPSDE(), "score", "likelihood", Importance()),
    "ddpm-eps-simple-discrete": (
        lambda: sd.VPSDE(sd.DiscreteSchedule.linear(1000)),
        "eps",
        "simple",
        "discrete",
    ),
    "cosine-v-simple-uniform": (lambda: sd.VPSDE(sd.CosineSchedule()), "v", "simple", Uniform()),
    "subvp-eps-likelihood-uniform": (
        lambda: sd.SubVPSDE(),
        "eps",
        "likelihood",
        Uniform(t_min=1e-3),
    ),
    "ve-edm-edm-lognormal": (lambda: sd.VESDE(0.002, 80.0), "edm", "edm", LogNormal()),
    "ve-score-sigma2-uniform": (lambda: sd.VESDE(), "score", "sigma2", Uniform()),
    "rf-flow-simple-logitnormal": (lambda: sd.rectified_flow(), "flow", "simple", LogitNormal()),
    "rf-v-simple-uniform": (lambda: sd.rectified_flow(), "v", "simple", Uniform()),
    "rf-v-sigma2-uniform": (lambda: sd.rectified_flow(), "v", "sigma2", Uniform(t_min=1e-3)),
    "rf-eps-minsnr-uniform": (lambda: sd.rectified_flow(), "eps", "min_snr", Uniform()),
    "ve-x0-minsnr-uniform": (lambda: sd.VESDE(), "x0", "min_snr", Uniform()),
    "subvp-flow-likelihood-uniform": (
        lambda: sd.SubVPSDE(),
        "flow",
        "likelihood",
        Uniform(t_min=1e-3),
    ),
    "cospath-x0-edm-uniform": (lambda: sd.cosine_path(), "x0", "edm", Uniform(t_min=1e-2)),
}


@pytest.mark.parametrize("case", CASES)
def test_expected_loss_matches_closed_form(case):
    build, prediction, weighting, sampler = CASES[case]
    sde = build()
    loss = mc_loss(sde, prediction, weighting, sampler)
    mean, se = float(loss.mean()), float(loss.std() / math.sqrt(loss.numel()))
    truth = expected(sde, prediction, weighting, sampler)
    assert abs(mean - truth) < 4 * se, (mean, se, truth)
    assert se < 0.05 * abs(truth)  # the check has power: the noise is small against the value


def test_importance_sampling_same_mean_smaller_variance():
    sde = sd.VPSDE()
    uniform = mc_loss(sde, "eps", "likelihood", Uniform(t_min=1e-3), seed=1)
    weighted = mc_loss(sde, "eps", "likelihood", Importance(t_min=1e-3), seed=2)
    diff = float(uniform.mean() - weighted.mean())
    se = math.sqrt((float(uniform.var()) + float(weighted.var())) / uniform.numel())
    assert abs(diff) < 4 * se
    # measured: the variance ratio is 17 here; a margin of 5 leaves room for the seed
    assert float(weighted.var()) * 5 < float(uniform.var())


def test_importance_sampler_on_ve_and_refused_at_zero_snr():
    sde = sd.VESDE()
    loss = mc_loss(sde, "score", "likelihood", Importance(), seed=3)
    truth = expected(sde, "score", "likelihood", Importance())
    assert abs(float(loss.mean()) - truth) < 4 * float(loss.std()) / math.sqrt(loss.numel())
    with pytest.raises(ValueError, match="finite log-SNR"):
        mc_loss(sd.rectified_flow(), "flow", "likelihood", Importance(), n=8)


def test_equivalent_combinations_give_equal_losses():
    """eps with simple = eps with sigma2 = a score network -eps/s with sigma2 (score_sde's
    |s s_hat + z|^2), and EDM's weighted loss on D is F's plain MSE."""
    sde = sd.VPSDE()
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 4).double()
    eps_net = lambda x, t: lin(torch.cat([x, t[:, None]], 1))  # noqa: E731
    score_net = lambda x, t: -eps_net(x, t) / sde.marginal(t)[1][:, None]  # noqa: E731
    x0 = MU + VAR.sqrt() * torch.randn(64, 4, dtype=torch.float64)

    def loss(net, pred, weighting):
        gen = torch.Generator().manual_seed(7)
        return denoising_loss(net, sde, x0, prediction=pred, weighting=weighting, generator=gen)

    simple = loss(eps_net, "eps", "simple")
    torch.testing.assert_close(loss(eps_net, "eps", "sigma2"), simple, rtol=1e-12, atol=0)
    torch.testing.assert_close(loss(score_net, "score", "sigma2"), simple, rtol=1e-10, atol=0)
    edm_net = lambda x, c: lin(torch.cat([x, c[:, None]], 1))  # noqa: E731
    torch.testing.assert_close(
        loss(edm_net, "edm", "edm"), loss(edm_net, "edm", "simple"), rtol=1e-12, atol=0
    )


def test_edm_coefficients_match_their_formulas():
    pre = EDMPreconditioning(sigma_data=0.5)
    sigma = torch.tensor([0.002, 0.1, 0.5, 1.0, 80.0], dtype=torch.float64)
    sd2 = 0.25
    torch.testing.assert_close(pre.c_skip(sigma), sd2 / (sigma**2 + sd2))
    torch.testing.assert_close(pre.c_out(sigma), sigma * 0.5 / torch.sqrt(sigma**2 + sd2))
    torch.testing.assert_close(pre.c_in(sigma), 1 / torch.sqrt(sigma**2 + sd2))
    torch.testing.assert_close(pre.c_noise(sigma), torch.log(sigma) / 4)
    torch.testing.assert_close(pre.weight(sigma) * pre.c_out(sigma) ** 2, torch.ones(5).double())
    # the preconditioned optimal F gives back the optimal denoiser on any path
    sde = sd.VPSDE()
    x = torch.randn(6, 4, dtype=torch.float64)
    t = torch.linspace(0.05, 0.95, 6, dtype=torch.float64)
    denoised = EDMDenoiser(optimal(sde, "edm"), sde, PRE)(x, t)
    torch.testing.assert_close(denoised, optimal(sde, "x0")(x, t))


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "flow", "score", "edm"])
def test_a_gradient_step_lowers_the_loss(prediction):
    sde = sd.rectified_flow() if prediction == "flow" else sd.VPSDE()
    torch.manual_seed(0)
    net_body = torch.nn.Sequential(torch.nn.Linear(5, 32), torch.nn.SiLU(), torch.nn.Linear(32, 4))
    net = lambda x, t: net_body(torch.cat([x, t[:, None]], 1))  # noqa: E731
    x0 = (MU + VAR.sqrt() * torch.randn(256, 4, dtype=torch.float64)).float()
    weighting = "edm" if prediction == "edm" else "simple"
    sampler = Uniform(t_min=1e-2, t_max=0.99)

    def loss():
        gen = torch.Generator().manual_seed(3)
        return denoising_loss(net, sde, x0, prediction=prediction, weighting=weighting,
                              t_sampler=sampler, generator=gen).mean()  # fmt: skip

    before = loss()
    before.backward()
    with torch.no_grad():
        for p in net_body.parameters():
            p -= 1e-3 * p.grad
    assert float(loss().detach()) < float(before.detach())


def test_bad_arguments_are_named():
    sde = sd.VPSDE()
    x0 = torch.zeros(4, 2)
    net = lambda x, t: x  # noqa: E731
    with pytest.raises(ValueError, match="prediction"):
        denoising_loss(net, sde, x0, prediction="noise")
    with pytest.raises(ValueError, match="weighting"):
        denoising_loss(net, sde, x0, weighting="snr")
    with pytest.raises(ValueError, match="t_sampler"):
        denoising_loss(net, sde, x0, t_sampler="beta")
    with pytest.raises(ValueError, match="t_min"):
        denoising_loss(net, sde, x0, t_sampler=Uniform(t_min=0.0))
    with pytest.raises(ValueError, match="discrete"):
        denoising_loss(net, sde, x0, t_sampler="discrete")
    with pytest.raises(ValueError, match="gamma"):
        MinSNR(gamma=-1)
    with pytest.raises(ValueError, match="x0"):
        denoising_loss(net, sde, torch.zeros(4, dtype=torch.long))
