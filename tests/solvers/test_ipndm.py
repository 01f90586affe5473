"""iPNDM: its Adams–Bashforth steps against the closed-form Gaussian flow, and the analytic
first step."""

import math

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.evaluation.targets import GaussianMixture

V = 0.5
DATA = GaussianMixture([1.0], [[0.0, 0.0]], [[V, V]])


def endpoint_error(sde, solver, steps):
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    states = {}

    def keep(k, t, x):
        states[k] = x.clone()

    sol = sd.sample(DATA.exact_score(sde), sde, x_T=x_T, solver=solver, steps=steps,
                    time_grid="logsnr", callback=keep)  # fmt: skip
    m_T, s_T = (float(c) for c in sde.marginal(torch.tensor(1.0, dtype=torch.float64)))
    m_e, s_e = (float(c) for c in sde.marginal(sol.times[-2]))
    exact = x_T * math.sqrt((m_e**2 * V + s_e**2) / (m_T**2 * V + s_T**2))
    return float((states[steps - 2] - exact).pow(2).mean().sqrt())


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.VESDE()], ids=["vp", "ve"])
def test_ipndm_converges_at_its_declared_order_and_higher_q_lowers_the_error(sde):
    # measured (VP, logsnr grid, 20..160 steps): slopes 1.00, 2.02, 1.91, 2.10 for q = 1..4
    steps, at_20 = [20, 40, 80, 160], {}
    for q in (1, 2, 3, 4):
        solver = sd.solvers.get("ipndm", order=q)
        errs = [endpoint_error(sde, solver, n) for n in steps]
        slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
        assert slope > solver.order - 0.25, (q, slope)
        at_20[q] = errs[0]
    assert max(at_20[3], at_20[4]) < at_20[2] < at_20[1] / 5


def test_ipndm_first_step_is_ddim_and_the_analytic_first_step_saves_an_evaluation():
    sde = sd.VPSDE()
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    first = {}
    for name, solver in [("ddim", "ddim"), ("ipndm", sd.solvers.get("ipndm"))]:
        sd.sample(DATA.exact_score(sde), sde, x_T=x_T, solver=solver, steps=6,
                  callback=lambda k, t, x, n=name: first.setdefault(n, x.clone()))  # fmt: skip
    torch.testing.assert_close(first["ipndm"], first["ddim"], rtol=1e-12, atol=1e-12)
    unit = GaussianMixture([1.0], [[0.0, 0.0]], [[1.0, 1.0]])  # AFS's eps is exact for N(0, I)
    plain = sd.sample(unit.exact_score(sde), sde, x_T=x_T, solver="ipndm", steps=6)
    afs = sd.sample(unit.exact_score(sde), sde, x_T=x_T, solver=sd.solvers.get("ipndm", afs=True),
                    steps=6)  # fmt: skip
    assert (plain.nfe, afs.nfe) == (6, 5)
    assert sd.solvers.get("ipndm", afs=True).planned_nfe(6) == 5
    # VP: exact eps at T is s_T x_T, AFS takes x_T / sqrt(m_T^2 + s_T^2) = x_T: 1 - s_T = 2e-5,
    # times m_1 (sigma~_T - sigma~_1) ~ 60 on the first step and reused by the AB weights:
    # measured 1.9e-3 at most
    torch.testing.assert_close(afs.samples, plain.samples, rtol=0, atol=5e-3)


def test_ipndm_options_are_checked():
    with pytest.raises(ValueError, match="order must be 1, 2, 3 or 4"):
        sd.solvers.get("ipndm", order=5)
    with pytest.raises(TypeError, match="afs"):
        sd.solvers.get("ipndm", afs=1)
