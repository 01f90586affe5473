"""The torch-native Dormand–Prince solver against closed forms and scipy."""

import math
from fractions import Fraction

import pytest
import torch

from scoresde import ode


def test_tableau_is_consistent():
    # Row sums equal the nodes, both solutions are consistent (weights sum to 1), the error
    # weights sum to 0, and the propagated weights are the last stage row (FSAL).
    for c, row in zip(ode._C, ode._A, strict=True):
        assert sum(row, Fraction(0)) == c
    assert sum(ode._B5) == 1 and sum(ode._B4) == 1
    assert ode._B5[:6] == ode._A[6]
    # Fifth-order conditions for quadrature: sum b_i c_i^(q-1) = 1/q, q = 1..5.
    for q in range(1, 6):
        assert sum(b * c ** (q - 1) for b, c in zip(ode._B5, ode._C, strict=True)) == Fraction(1, q)


def _cos_problem(t, y):
    return (-y[0] * math.cos(t),)  # y(t) = y(t0) exp(-(sin t - sin t0))


@pytest.mark.parametrize("direction", [1, -1])
def test_closed_form_and_tolerance_scaling(direction):
    t0, t1 = (0.0, 3.0) if direction == 1 else (3.0, 0.0)
    y0 = (torch.ones(3, dtype=torch.float64),)
    exact = math.exp(-(math.sin(t1) - math.sin(t0)))
    errors, nfes = [], []
    for tol in (1e-4, 1e-7, 1e-10):
        res = ode.dopri5(_cos_problem, y0, t0, t1, rtol=tol, atol=tol)
        errors.append(abs(float(res.y[0][0]) - exact))
        nfes.append(res.nfe)
        assert (
            res.accepted == len(res.step_sizes) and res.nfe == 6 * (res.accepted + res.rejected) + 2
        )
        # the global error stays within a small multiple of the tolerance (measured 0.1-13 x)
        assert errors[-1] < 50 * tol * max(1.0, exact)
    assert errors[0] > errors[1] > errors[2]
    assert nfes[0] < nfes[1] < nfes[2]


def test_tuple_state_agrees_with_scipy():
    # Lotka–Volterra with the two species in separate tensors, batch of 4 initial conditions.
    def lv(t, y):
        u, v = y
        return (u * (1.5 - v), v * (u - 3.0))

    y0 = (torch.linspace(1.0, 2.0, 4, dtype=torch.float64), torch.ones(4, dtype=torch.float64))
    a = ode.dopri5(lv, y0, 0.0, 5.0, rtol=1e-10, atol=1e-10)
    b = ode.solve_ivp_scipy(lv, y0, 0.0, 5.0, rtol=1e-10, atol=1e-10)
    for ya, yb in zip(a.y, b.y, strict=True):
        torch.testing.assert_close(ya, yb, rtol=1e-7, atol=1e-7)


def test_rejections_are_counted_and_recovered():
    # A fast transient: a first step of 1 is far too large and must be rejected.
    def stiffish(t, y):
        return (-30.0 * (y[0] - math.cos(t)),)

    res = ode.dopri5(
        stiffish,
        (torch.zeros(2, dtype=torch.float64),),
        0.0,
        2.0,
        rtol=1e-6,
        atol=1e-6,
        first_step=1.0,
    )
    assert res.rejected >= 1
    # y = (900 cos t + 30 sin t - 900 e^{-30 t}) / 901
    exact = (900 * math.cos(2.0) + 30 * math.sin(2.0) - 900 * math.exp(-60.0)) / 901
    assert abs(float(res.y[0][0]) - exact) < 1e-5
    assert res.stats["rejected_steps"] == res.rejected


def test_failures_are_reported():
    with pytest.raises(FloatingPointError, match="step size collapsed"):
        ode.dopri5(lambda t, y: (y[0] * float("nan"),), (torch.ones(2),), 0.0, 1.0)
    with pytest.raises(RuntimeError, match="max_steps"):
        ode.dopri5(_cos_problem, (torch.ones(2),), 0.0, 100.0, rtol=1e-9, atol=1e-9, max_steps=5)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="rtol"):
            ode.dopri5(_cos_problem, (torch.ones(2),), 0.0, 1.0, rtol=bad)
        with pytest.raises(ValueError, match="atol"):
            ode.solve_ivp_scipy(_cos_problem, (torch.ones(2),), 0.0, 1.0, atol=bad)


@pytest.mark.parametrize(("t0", "t1"), [(0.0, 0.5), (1.0, 0.2)])
def test_dopri5_never_evaluates_outside_the_interval(t0, t1):
    # a slow decay makes Hairer's probe step 0.01 |y| / |f| = 10, far beyond the interval
    seen = []

    def func(t, y):
        seen.append(t)
        return (-1e-3 * y[0],)

    y0 = (torch.ones(3, dtype=torch.float64),)
    res = ode.dopri5(func, y0, t0, t1, rtol=1e-8, atol=1e-8)
    lo, hi = min(t0, t1), max(t0, t1)
    assert all(lo <= t <= hi for t in seen), (min(seen), max(seen))
    torch.testing.assert_close(res.y[0], y0[0] * math.exp(-1e-3 * (t1 - t0)))
