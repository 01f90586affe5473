import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import scoresde as sd

T64 = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)


def test_linear_closed_forms():
    s = sd.LinearSchedule(0.1, 20.0)
    t = T64
    log_ab = -(0.1 * t + 0.5 * t**2 * 19.9)
    torch.testing.assert_close(s.log_alpha_bar(t), log_ab)
    torch.testing.assert_close(s.alpha_bar(t), torch.exp(log_ab))
    torch.testing.assert_close(s.beta(t), 0.1 + 19.9 * t)
    torch.testing.assert_close(s.sigma(t), torch.sqrt(1 - torch.exp(log_ab)))
    lam = torch.log(torch.exp(log_ab[1:]) / (1 - torch.exp(log_ab[1:])))
    torch.testing.assert_close(s.log_snr(t[1:]), lam)


def test_cosine_closed_form_below_cap():
    s = sd.CosineSchedule(s=0.008)
    t = torch.linspace(0, s.t_cap, 50, dtype=torch.float64)
    f = lambda u: torch.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    torch.testing.assert_close(s.alpha_bar(t), f(t) / f(torch.zeros(1, dtype=torch.float64)))
    beta = math.pi / 1.008 * torch.tan((t + 0.008) / 1.008 * math.pi / 2)
    torch.testing.assert_close(s.beta(t), beta)


def test_cosine_guard_is_documented_values():
    s = sd.CosineSchedule()
    assert s.t_cap == pytest.approx(0.980, abs=1e-3)
    assert float(s.alpha_bar(1.0)) == pytest.approx(1.3e-4, rel=0.05)
    assert float(s.beta(1.0)) == pytest.approx(100.0)
    assert math.isfinite(float(s.beta(1.0)))


SCHEDULES = [
    sd.LinearSchedule(),
    sd.LinearSchedule(0.5, 5.0),
    sd.CosineSchedule(),
    sd.DiscreteSchedule.linear(),
    sd.DiscreteSchedule.cosine(),
    sd.DiscreteSchedule.scaled_linear(),
    sd.LogAlphaBarSchedule(lambda t: -(3 * t + 4 * t**3)),
]


@pytest.mark.parametrize("sched", SCHEDULES, ids=repr)
def test_beta_is_minus_derivative_of_log_alpha_bar(sched):
    # central differences at points away from the discrete table's kinks
    t = torch.linspace(0.0123, 0.9777, 40, dtype=torch.float64)
    h = 1e-7
    fd = -(sched.log_alpha_bar(t + h) - sched.log_alpha_bar(t - h)) / (2 * h)
    torch.testing.assert_close(sched.beta(t), fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sched", SCHEDULES, ids=repr)
def test_t_from_log_snr_inverts(sched):
    t = torch.linspace(1e-3, 1.0, 200, dtype=torch.float64)
    torch.testing.assert_close(sched.t_from_log_snr(sched.log_snr(t)), t, rtol=1e-7, atol=1e-9)


@given(st.floats(1e-3, 1.0), st.floats(0.01, 5.0), st.floats(0.1, 30.0))
@settings(max_examples=60, deadline=None)
def test_linear_inverse_property(t, b0, span):
    s = sd.LinearSchedule(b0, b0 + span)
    tt = torch.tensor([t], dtype=torch.float64)
    assert float(s.t_from_log_snr(s.log_snr(tt))) == pytest.approx(t, rel=1e-8, abs=1e-10)


def test_discrete_grid_values_equal_cumprod():
    betas = torch.rand(37, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.3
    s = sd.DiscreteSchedule(betas + 1e-3)
    t = torch.arange(1, 38, dtype=torch.float64) / 37
    torch.testing.assert_close(
        s.alpha_bar(t), torch.cumprod(1 - (betas + 1e-3), 0), rtol=1e-12, atol=0
    )
    assert float(s.alpha_bar(0.0)) == 1.0
    # log alpha_bar linear between knots: midpoint is the mean of the logs
    mid = (t[:-1] + t[1:]) / 2
    logs = torch.log(torch.cumprod(1 - (betas + 1e-3), 0))
    torch.testing.assert_close(s.log_alpha_bar(mid), (logs[:-1] + logs[1:]) / 2)


def test_standard_tables_match_published_formulas():
    lin = sd.DiscreteSchedule.linear()
    np.testing.assert_allclose(lin.betas.numpy(), np.linspace(1e-4, 0.02, 1000), rtol=1e-15, atol=0)
    cos = sd.DiscreteSchedule.cosine()
    f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    i = np.arange(1000)
    expected = np.minimum(1 - f((i + 1) / 1000) / f(i / 1000), 0.999)
    np.testing.assert_allclose(cos.betas.numpy(), expected, rtol=1e-13, atol=0)
    assert cos.betas[-1].item() == 0.999
    sl = sd.DiscreteSchedule.scaled_linear()
    np.testing.assert_allclose(sl.betas.numpy(), np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)


def test_discrete_linear_is_close_to_continuous_linear():
    # N beta_i -> beta(t): the two schedules agree to O(1/N)
    t = torch.linspace(0.01, 1, 50, dtype=torch.float64)
    d, c = sd.DiscreteSchedule.linear(), sd.LinearSchedule()
    torch.testing.assert_close(d.log_alpha_bar(t), c.log_alpha_bar(t), rtol=2e-2, atol=2e-3)


def test_custom_schedule_autograd_beta():
    s = sd.LogAlphaBarSchedule(lambda t: -(2 * t + t**2))
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(s.beta(t), 2 + 2 * t)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: sd.LinearSchedule(20.0, 0.1), "beta_max"),
        (lambda: sd.LinearSchedule(1.0, 1.0), "beta_max"),
        (lambda: sd.LinearSchedule(-1.0, 1.0), "beta_min"),
        (lambda: sd.DiscreteSchedule([1.0, 0.1]), r"betas must lie in \(0, 1\)"),
        (lambda: sd.DiscreteSchedule([1.0]), r"betas must lie in \(0, 1\)"),
        (lambda: sd.DiscreteSchedule([0.1, -0.01]), r"betas must lie in \(0, 1\)"),
        (lambda: sd.CosineSchedule(s=-1), "s must be"),
        (lambda: sd.LogAlphaBarSchedule(lambda t: t), "strictly decreasing"),
    ],
)
def test_bad_schedule_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_time_outside_range_is_rejected(bad):
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        sd.LinearSchedule().check_time(torch.tensor([0.5, bad]))
