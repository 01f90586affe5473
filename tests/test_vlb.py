"""Ho et al.'s variational bound and the PF-ODE likelihood on Gaussian data with the exact eps.

For x_0 ~ N(m, s^2) per dimension the exact noise prediction is linear,
eps(x_t) = sqrt(1 - ab)(x_t - sqrt(ab) m) / (ab s^2 + 1 - ab), so every reverse mean is
mu(x_i) = u_i x_i + c_i and every term of the bound is a closed-form function of (x_0, z_i).
The closed forms below are written from the definitions, independently of scoresde.core.ddpm.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import scoresde as sd
from scoresde import ddpm

M, S = 0.3, 0.5


def exact_eps(schedule):
    def eps(x, t):
        ab = schedule.alpha_bar(t.double()).to(x.dtype).view(-1, *[1] * (x.dim() - 1))
        return (1 - ab).sqrt() * (x - ab.sqrt() * M) / (ab * S * S + 1 - ab)

    return eps


def coefficients(schedule, variance):
    """Per timestep i = 1..N: u, c (reverse mean u x + c), c0, ct (posterior mean), beta~ and
    the model variance sigma^2 (beta~_2 at i = 1)."""
    ab, beta = schedule.alphas_cumprod, schedule.betas
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    alpha = ab / ab_prev
    g = (1 - ab).sqrt() / (ab * S * S + 1 - ab)
    u = (1 - beta * g / (1 - ab).sqrt()) / alpha.sqrt()
    c = beta * g * ab.sqrt() * M / ((1 - ab).sqrt() * alpha.sqrt())
    c0 = ab_prev.sqrt() * beta / (1 - ab)
    ct = alpha.sqrt() * (1 - ab_prev) / (1 - ab)
    post = (1 - ab_prev) * beta / (1 - ab)
    var = post.clone() if variance == "posterior" else beta.clone()
    var[0] = post[1]
    return ab, u, c, c0, ct, post, var


def closed_form_terms(schedule, variance, x0, z):
    """(prior, kl (B, N-1), decoder) in nats for data x0 (B, D) and draws z (N, B, D)."""
    ab, u, c, c0, ct, post, var = coefficients(schedule, variance)
    shape = (-1, 1, 1)
    x_t = ab.sqrt().view(shape) * x0 + (1 - ab).sqrt().view(shape) * z  # (N, B, D)
    mean_q = c0.view(shape) * x0 + ct.view(shape) * x_t
    mean_p = u.view(shape) * x_t + c.view(shape)
    kl = 0.5 * (
        torch.log(var / post)[1:].view(shape)
        + (post / var)[1:].view(shape)
        - 1
        + (mean_q - mean_p)[1:].square() / var[1:].view(shape)
    )
    a_n = ab[-1]
    prior = 0.5 * (a_n * x0.square() + (1 - a_n) - 1 - torch.log(1 - a_n))
    decoder = 0.5 * (math.log(2 * math.pi * var[0]) + (x0 - mean_p[0]).square() / var[0])
    return prior.sum(-1), kl.sum(-1).T, decoder.sum(-1)


def expected_bound(schedule, variance):
    """E over x_0 ~ N(m, s^2) and all draws of the bound, per dimension, in nats."""
    ab, u, c, c0, ct, post, var = coefficients(schedule, variance)
    a, b = ab.sqrt(), (1 - ab).sqrt()
    lin, noise = c0 + (ct - u) * a, (ct - u) * b  # mean_q - mean_p = lin x0 + noise z - c
    sq = (lin * M - c) ** 2 + lin**2 * S * S + noise**2
    kl = (0.5 * (torch.log(var / post) + post / var - 1) + sq / (2 * var))[1:].sum()
    prior = 0.5 * (ab[-1] * (M * M + S * S) + (1 - ab[-1]) - 1 - torch.log(1 - ab[-1]))
    dec_lin = 1 - u[0] * a[0]  # x0 - mean_p(x_1) = dec_lin x0 - u_1 b_1 z - c_1
    dec_sq = (dec_lin * M - c[0]) ** 2 + dec_lin**2 * S * S + (u[0] * b[0]) ** 2
    decoder = 0.5 * math.log(2 * math.pi * var[0]) + dec_sq / (2 * var[0])
    return float(prior + kl + decoder)


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_bound_equals_closed_form_draw_by_draw(variance):
    """With the same noise draws, every term equals its closed form: the total to 1e-9
    bits/dim (float64 round-off), far inside the 1e-3 asked for."""
    schedule = sd.DiscreteSchedule.linear(1000)
    gen = torch.Generator().manual_seed(0)
    x0 = M + S * torch.randn(64, 3, generator=gen, dtype=torch.float64)
    z = torch.randn(1000, 64, 3, generator=gen, dtype=torch.float64)
    got = ddpm.variational_bound(exact_eps(schedule), schedule, x0, variance=variance, noise=z)
    prior, kl, decoder = closed_form_terms(schedule, variance, x0, z)
    torch.testing.assert_close(got.prior, prior, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got.kl, kl, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(got.decoder, decoder, rtol=1e-9, atol=1e-9)
    expected_bpd = (prior + kl.sum(1) + decoder) / (3 * math.log(2))
    assert (got.bits_per_dim() - expected_bpd).abs().max() < 1e-9


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_bound_estimator_is_unbiased(variance):
    """Drawn with a generator over 20000 x 2 Gaussian points, the mean bound matches its
    closed-form expectation: 4 standard errors (~0.04 nats/dim measured at this size; the
    draw-by-draw test above pins the formula itself to 1e-9)."""
    schedule = sd.DiscreteSchedule.linear(1000)
    gen = torch.Generator().manual_seed(1)
    x0 = M + S * torch.randn(20_000, 2, generator=gen, dtype=torch.float64)
    got = ddpm.variational_bound(
        exact_eps(schedule), schedule, x0, variance=variance, generator=gen
    )
    per_dim = got.total / 2
    se = float(per_dim.std() / math.sqrt(per_dim.numel()))
    assert se < 0.02
    assert abs(float(per_dim.mean()) - expected_bound(schedule, variance)) < 4 * se


def test_discretised_decoder_matches_normal_cdf():
    """-log of N(mu(x_1), sigma_1^2)'s mass on each pixel's bin, the outer bins to -inf and
    +inf, against scipy's normal CDF with the same draws; levels span all of 0..16."""
    schedule = sd.DiscreteSchedule.linear(1000)
    levels, w = 17, 2 / 17
    gen = torch.Generator().manual_seed(2)
    k = torch.arange(levels, dtype=torch.float64).repeat(40, 1)  # (40, 17): every level
    x0 = -1 + (k + 0.5) * w
    z = torch.randn(x0.shape, generator=gen, dtype=torch.float64) * 3  # wide, to reach tails
    got = ddpm.decoder_nll(exact_eps(schedule), schedule, x0, levels=levels, noise=z)
    ab, u, c, *_, var = coefficients(schedule, "posterior")
    mean = (u[0] * (ab[0].sqrt() * x0 + (1 - ab[0]).sqrt() * z) + c[0]).numpy()
    sd_ = math.sqrt(float(var[0]))
    upper = np.where(k.numpy() == levels - 1, np.inf, (x0.numpy() + w / 2 - mean) / sd_)
    lower = np.where(k.numpy() == 0, -np.inf, (x0.numpy() - w / 2 - mean) / sd_)
    mass = stats.norm.cdf(upper) - stats.norm.cdf(lower)
    logmass = np.where(mass > 1e-300, np.log(np.maximum(mass, 1e-300)), np.nan)
    ok = np.isfinite(logmass).all(1)
    assert ok.sum() > 30
    expected = -logmass[ok].sum(1)
    np.testing.assert_allclose(got.numpy()[ok], expected, rtol=1e-8, atol=1e-10)


def test_ode_likelihood_matches_gaussian_density():
    """The PF-ODE log-likelihood of Gaussian data with the exact score equals the density of
    the time-eps marginal N(sqrt(ab) m, ab s^2 + 1 - ab) to 1e-3 bits/dim."""
    schedule = sd.DiscreteSchedule.linear(1000)
    sde = sd.VPSDE(schedule)
    eps_t = 1e-3
    score = sd.Score(exact_eps(schedule), sde, "eps")
    gen = torch.Generator().manual_seed(3)
    x = M + S * torch.randn(32, 4, generator=gen, dtype=torch.float64)

    def marginal(t):
        ab = float(schedule.alpha_bar(torch.tensor([t], dtype=torch.float64)))
        return torch.distributions.Normal(math.sqrt(ab) * M, math.sqrt(ab * S * S + 1 - ab))

    # the exact p_T as prior: N(0, I) differs from it by ~3e-3 bits/dim (mean sqrt(ab_N) m)
    res = sd.log_likelihood(
        score, sde, x, rtol=1e-8, atol=1e-8, eps=eps_t,
        prior_log_prob=lambda z: marginal(1.0).log_prob(z).sum(1),
    )  # fmt: skip
    exact = marginal(eps_t).log_prob(x).sum(1)
    bpd_gap = (res.log_prob - exact).abs().max() / (4 * math.log(2))
    assert bpd_gap < 1e-3  # measured 1.2e-4 (the ODE crosses beta(t)'s 1000 jumps)


def test_bad_input():
    schedule = sd.DiscreteSchedule.linear(10)
    eps = exact_eps(schedule)
    x0 = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="variance"):
        ddpm.variational_bound(eps, schedule, x0, variance="learned")
    with pytest.raises(ValueError, match="noise must have shape"):
        ddpm.variational_bound(eps, schedule, x0, noise=torch.zeros(9, 3, 2))
    with pytest.raises(ValueError, match="centres"):
        ddpm.decoder_nll(eps, schedule, x0 + 0.01, levels=17)
    with pytest.raises(TypeError, match="DiscreteSchedule"):
        ddpm.variational_bound(eps, sd.LinearSchedule(), x0)
    with pytest.raises(ValueError, match=r"i must lie in \[2, 10\]"):
        ddpm.posterior_kl(eps, schedule, x0, 1)
