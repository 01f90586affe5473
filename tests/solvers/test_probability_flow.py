"""The probability-flow ODE solvers (ode_euler, ode_heun, ode_rk45, ode_dopri5) against the
closed-form flow of Gaussian data."""

import math

import pytest
import torch
from closed_forms import slope
from conftest import V, gaussian

import scoresde as sd
from scoresde.evaluation.targets import GaussianMixture


def _gaussian_flow(x_T, sde, mu, var, t):
    """Exact probability-flow map for N(mu, var) data: x_t - m_t mu scales with the std of p_t."""
    T = torch.tensor(sde.T, dtype=torch.float64)
    (m_T, s_T), (m_t, s_t) = sde.marginal(T), sde.marginal(torch.tensor(t, dtype=torch.float64))
    ratio = torch.sqrt(m_t**2 * var + s_t**2) / torch.sqrt(m_T**2 * var + s_T**2)
    return m_t * mu + ratio * (x_T - m_T * mu)


@pytest.mark.slow
def test_heun_converges_at_order_two_and_euler_at_order_one():
    sde, mu, var = sd.VPSDE(), 0.7, 0.25
    g = GaussianMixture([1.0], [[mu]], [[var]])
    x_T = torch.randn(256, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = _gaussian_flow(x_T, sde, mu, var, 1e-3)
    steps = [20, 40, 80, 160]
    errs = {"ode_heun": [], "ode_euler": []}
    score = g.exact_score(sde)
    for name in errs:
        for n in steps:
            sol = sd.sample(
                score,
                sde,
                x_T=x_T,
                solver=name,
                steps=n,
                return_trajectory=True,
            )
            errs[name].append(float((sol.trajectory[-2] - exact).abs().max()))
    assert slope(steps, errs["ode_heun"]) == pytest.approx(2.0, abs=0.3), errs
    assert slope(steps, errs["ode_euler"]) == pytest.approx(1.0, abs=0.3), errs


@pytest.mark.parametrize("name", ["ode_dopri5", "ode_rk45"])
@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.VESDE()], ids=["vp", "ve"])
def test_adaptive_ode_samplers_follow_the_closed_form_flow(name, sde):
    """Gaussian data: the flow maps x_T to x_T sqrt(v(eps)/v(T)); then Tweedie's
    x0 = m V / v x at eps."""
    score, var = gaussian(sde)
    x_T = sde.prior_sample((20, 3), generator=torch.Generator().manual_seed(2)).double()
    solver = sd.solvers.get(name, rtol=1e-9, atol=1e-9)
    sol = sd.sample(score, sde, x_T=x_T, solver=solver, steps=2, eps=1e-3,
                    generator=torch.Generator())  # fmt: skip
    m_eps = float(sde.marginal(torch.tensor(1e-3, dtype=torch.float64))[0])
    expected = x_T * math.sqrt(var(1e-3) / var(sde.T)) * m_eps * V / var(1e-3)
    torch.testing.assert_close(sol.samples, expected, rtol=1e-6, atol=1e-9)
