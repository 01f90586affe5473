"""Time grids against their formulas, computed independently of scoresde.core.grids."""

import math

import pytest
import torch

import scoresde as sd
from scoresde.core.grids import make_time_grid

B0, B1 = 0.1, 20.0  # LinearSchedule's beta_min, beta_max


def vp_linear_t_of_sigma(sigma):
    """Invert sigma^2 = (1 - ab)/ab with -log ab = B0 t + (B1 - B0) t^2 / 2 (a quadratic)."""
    big_l = math.log1p(sigma * sigma)
    return (-B0 + math.sqrt(B0 * B0 + 2 * (B1 - B0) * big_l)) / (B1 - B0)


def ve_t_of_sigma(sigma, smin=0.01, smax=50.0):
    return math.log(sigma / smin) / math.log(smax / smin)


def karras_sigmas(smax, smin, n, rho):
    return [
        (smax ** (1 / rho) + i / (n - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
        for i in range(n)
    ]


@pytest.mark.parametrize("n", [2, 5, 37])
def test_quadratic_grid_formula(n):
    sde, eps = sd.VPSDE(), 1e-3
    grid = make_time_grid(sde, n, "quadratic", eps)
    expected = [eps + (1 - eps) * (1 - i / (n - 1)) ** 2 for i in range(n)] + [0.0]
    assert grid.tolist() == pytest.approx(expected, rel=1e-13, abs=1e-15)


@pytest.mark.parametrize("n", [2, 6, 40])
@pytest.mark.parametrize("rho", [7.0, 3.0])
def test_karras_grid_formula_vp_and_ve(n, rho):
    from scoresde.core.grids import karras_grid

    eps = 1e-3
    vp = sd.VPSDE(sd.LinearSchedule())
    smax, smin = (math.sqrt(math.expm1(B0 * t + (B1 - B0) * t * t / 2)) for t in (1.0, eps))
    expected = [vp_linear_t_of_sigma(s) for s in karras_sigmas(smax, smin, n, rho)]
    got = karras_grid(vp, n, eps, rho=rho)
    assert got.tolist() == pytest.approx(expected, rel=1e-9, abs=1e-12)

    ve = sd.VESDE()
    smax, smin = 0.01 * 5000.0, 0.01 * 5000.0**eps
    expected = [ve_t_of_sigma(s) for s in karras_sigmas(smax, smin, n, rho)]
    assert karras_grid(ve, n, eps, rho=rho).tolist() == pytest.approx(expected, rel=1e-9)
    if rho == 7.0:  # the named rule "karras" is EDM's rho = 7
        named = make_time_grid(ve, n, "karras", eps)[:-1].tolist()
        assert named == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n", [3, 25])
def test_logsnr_grid_is_uniform_in_log_snr(n):
    eps = 1e-3
    vp = sd.VPSDE(sd.LinearSchedule())
    grid = make_time_grid(vp, n, "logsnr", eps)[:-1].tolist()

    def lam(t):  # log(ab / (1 - ab))
        return -math.log(math.expm1(B0 * t + (B1 - B0) * t * t / 2))

    target = [lam(1.0) + i / (n - 1) * (lam(eps) - lam(1.0)) for i in range(n)]
    assert [lam(t) for t in grid] == pytest.approx(target, rel=1e-9, abs=1e-9)


def test_uniform_grid_hits_ddpm_timesteps():
    sde = sd.VPSDE(sd.DiscreteSchedule.linear(1000))
    grid = make_time_grid(sde, 1000, "uniform", 1 / 1000)
    assert grid.tolist() == pytest.approx([(1000 - i) / 1000 for i in range(1001)], abs=1e-15)


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
