import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scoresde import ddpm


def _joint_conditional(x0, x_t, ab_t, ab_prev):
    """Independent truth: condition the joint Gaussian of (x_{t-1}, x_t) given x0 on x_t."""
    alpha = ab_t / ab_prev
    mu1, mu2 = ab_prev**0.5 * x0, ab_t**0.5 * x0
    s11 = 1 - ab_prev
    s12 = alpha**0.5 * (1 - ab_prev)  # Cov(x_{t-1}, x_t) = sqrt(alpha) Var(x_{t-1})
    s22 = 1 - ab_t
    return mu1 + s12 / s22 * (x_t - mu2), s11 - s12 * s12 / s22


def _product_of_gaussians(x0, x_t, ab_t, ab_prev):
    """Independent truth: p(x_{t-1}|x0) q(x_t|x_{t-1}) ∝ Gaussian, by adding precisions."""
    alpha = ab_t / ab_prev
    prec = 1 / (1 - ab_prev) + alpha / (1 - alpha)
    lin = ab_prev**0.5 * x0 / (1 - ab_prev) + alpha**0.5 * x_t / (1 - alpha)
    return lin / prec, 1 / prec


@given(
    st.floats(0.01, 0.98),
    st.floats(0.001, 0.99),
    st.integers(0, 10_000),
)
@settings(max_examples=80, deadline=None)
def test_posterior_matches_two_independent_derivations(ab_prev, frac, seed):
    ab_t = ab_prev * frac
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    x_t = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    mean, var = ddpm.posterior_mean_variance(x0, x_t, ab_t, ab_prev)
    for truth in (_joint_conditional, _product_of_gaussians):
        m_ref, v_ref = truth(x0, x_t, ab_t, ab_prev)
        torch.testing.assert_close(mean, m_ref, rtol=1e-9, atol=1e-9)
        assert float(var) == pytest.approx(v_ref, rel=1e-9)
    # the formula exactly as written in Ho et al.
    beta = 1 - ab_t / ab_prev
    assert float(var) == pytest.approx((1 - ab_prev) * beta / (1 - ab_t), rel=1e-12)


def test_reverse_mean_from_eps_is_posterior_with_x0_hat():
    gen = torch.Generator().manual_seed(0)
    ab_t = torch.rand(16, generator=gen, dtype=torch.float64) * 0.5 + 0.01
    ab_prev = ab_t + (1 - ab_t) * torch.rand(16, generator=gen, dtype=torch.float64) * 0.9
    x_t = torch.randn(16, 2, 5, generator=gen, dtype=torch.float64)
    eps = torch.randn(16, 2, 5, generator=gen, dtype=torch.float64)
    x0_hat = ddpm.predict_x0_from_eps(x_t, eps, ab_t)
    torch.testing.assert_close(
        x0_hat, (x_t - (1 - ab_t).sqrt().view(16, 1, 1) * eps) / ab_t.sqrt().view(16, 1, 1)
    )
    mean, _ = ddpm.posterior_mean_variance(x0_hat, x_t, ab_t, ab_prev)
    torch.testing.assert_close(ddpm.reverse_mean_from_eps(x_t, eps, ab_t, ab_prev), mean)


def test_final_step_to_alpha_bar_one_is_x0():
    x0, x_t = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    mean, var = ddpm.posterior_mean_variance(x0, x_t, 0.9, 1.0)
    torch.testing.assert_close(mean, x0)
    assert float(var) == 0.0


@pytest.mark.parametrize(
    ("ab_t", "ab_prev", "match"),
    [(0.5, 0.4, "larger"), (0.0, 0.5, "alpha_bar_t"), (0.5, 1.2, "alpha_bar_prev")],
)
def test_bad_alpha_bars(ab_t, ab_prev, match):
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError, match=match):
        ddpm.posterior_mean_variance(x, x, ab_t, ab_prev)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="one shape"):
        ddpm.posterior_mean_variance(torch.zeros(2, 2), torch.zeros(2, 3), 0.5, 0.6)
