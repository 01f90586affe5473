"""Gaussian paths stated by (m, s): their SDE coefficients against the named SDEs' closed
forms, the named paths (rectified flow, cosine, shifted), the refusal of bad paths, every
prediction type on every path, and the probability-flow ODE against its closed form."""

import math

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.evaluation.targets import GaussianMixture, mixture_2d
from scoresde.solvers.probability_flow import ODEDopri5

T64 = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
NAMED = {
    "vp_linear": lambda: sd.VPSDE(),
    "vp_cosine": lambda: sd.VPSDE(sd.CosineSchedule()),
    "vp_discrete": lambda: sd.VPSDE(sd.DiscreteSchedule.linear()),
    "subvp": lambda: sd.SubVPSDE(),
    "ve": lambda: sd.VESDE(),
}
PATHS = {
    "vp_linear": lambda: sd.VPSDE(),
    "ve": lambda: sd.VESDE(),
    "rectified_flow": lambda: sd.rectified_flow(),
    "rectified_flow_shift3": lambda: sd.rectified_flow(shift=3.0),
    "cosine": lambda: sd.cosine_path(),
}


def through_general_path(named):
    return sd.GaussianPath(lambda t: named.marginal(t)[0], lambda t: named.marginal(t)[1])


def rel(a, b):
    return float(((a - b).abs() / b.abs().clamp_min(1e-300)).max())


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_sdes_built_from_their_marginals_match_their_closed_forms(name):
    named = NAMED[name]()
    path = through_general_path(named)
    t = T64
    if name == "vp_discrete":  # beta is piecewise constant: keep off the knots i/N
        t = (torch.arange(10, 990, 10, dtype=torch.float64) + 0.5) / 1000
    for method in ("drift_coeff", "diffusion", "log_snr"):
        assert rel(getattr(path, method)(t), getattr(named, method)(t)) < 1e-10, method
    for method in ("marginal", "marginal_rate"):
        for a, b in zip(getattr(path, method)(t), getattr(named, method)(t), strict=True):
            assert rel(a, b) < 1e-10, method
    for a, b in zip(path.transition(t[:-1], t[1:]), named.transition(t[:-1], t[1:]), strict=True):
        assert rel(a, b) < 1e-10
    # the general path's prior is N(0, s(T)^2 I); VP and sub-VP keep Song et al.'s N(0, I)
    s_T = float(named.marginal(torch.tensor(1.0, dtype=torch.float64))[1])
    assert path.prior_std == s_T and abs(named.prior_std - s_T) < 1e-4


def test_rectified_flow_coefficients():
    rf, t = sd.rectified_flow(), T64
    m, s = rf.marginal(t)
    torch.testing.assert_close(m, 1 - t, rtol=0, atol=0)
    torch.testing.assert_close(s, t, rtol=0, atol=0)
    torch.testing.assert_close(rf.drift_coeff(t), -1 / (1 - t), rtol=1e-14, atol=0)
    torch.testing.assert_close(rf.diffusion(t) ** 2, 2 * t / (1 - t), rtol=1e-13, atol=0)
    # zero terminal SNR: m(1) = 0, log-SNR -inf, and its inverse gives T back
    one = torch.tensor([1.0], dtype=torch.float64)
    assert float(rf.marginal(one)[0]) == 0.0 and float(rf.log_snr(one)) == -math.inf
    assert float(rf.t_from_log_snr(torch.tensor([-math.inf], dtype=torch.float64))) == 1.0
    assert rf.prior_std == 1.0


def test_shift_is_sd3s_and_mu_is_fluxs():
    t, a = T64, 3.0
    shifted = sd.rectified_flow(shift=a)
    torch.testing.assert_close(shifted.marginal(t)[1], a * t / (1 + (a - 1) * t))
    mu = 0.7
    by_mu = sd.rectified_flow(mu=mu)
    sig = by_mu.marginal(t)[1]  # Flux: e^mu / (e^mu + (1/sigma - 1))
    torch.testing.assert_close(sig, math.exp(mu) / (math.exp(mu) + (1 / t - 1)))
    # closed-form rates agree with autograd of the shifted marginals
    auto = sd.GaussianPath(lambda u: shifted.marginal(u)[0], lambda u: shifted.marginal(u)[1])
    for a_, b_ in zip(auto.marginal_rate(t), shifted.marginal_rate(t), strict=True):
        assert rel(a_, b_) < 1e-12


@pytest.mark.parametrize("name", ["rectified_flow", "rectified_flow_shift3", "cosine"])
def test_closed_form_inverse_of_log_snr(name):
    path = PATHS[name]()
    back = path.t_from_log_snr(path.log_snr(T64))
    assert float((back - T64).abs().max()) < 1e-12
    bisected = sd.GaussianPath(lambda t: path.marginal(t)[0], lambda t: path.marginal(t)[1])
    assert float((bisected.t_from_log_snr(path.log_snr(T64)) - T64).abs().max()) < 1e-12
    assert float((path.t_from_sigma(path.sigma(T64)) - T64).abs().max()) < 1e-12


@pytest.mark.parametrize(
    ("mean", "std", "naming"),
    [
        (lambda t: 1 + 0.1 * t, lambda t: t, "mean must not increase with t; it does at t = 0.0"),
        (lambda t: 1 - 0.5 * t, lambda t: 1 - t, "std must increase strictly"),
        (lambda t: 0.9 - 0.5 * t, lambda t: t, "mean must be 1 at t = 0"),
        (lambda t: 1 - 1.5 * t, lambda t: t, "mean is negative at t = 0.666992"),
        (lambda t: 1 - t, lambda t: torch.log(t), "std is not finite at t = 0.0"),
        (
            lambda t: 1 - t + 1.2 * torch.relu(t - 0.5),
            lambda t: t,
            "increase with t; it does at t = 0.5",
        ),
    ],
)
def test_bad_paths_are_refused_naming_the_function_and_the_point(mean, std, naming):
    with pytest.raises(ValueError, match=naming.replace("(", r"\(").replace(")", r"\)")):
        sd.GaussianPath(mean, std)


def test_ve_constant_mean_is_a_path():
    path = sd.GaussianPath(lambda t: torch.ones_like(t), lambda t: 0.01 * 5000**t)
    assert float(path.drift_coeff(T64).abs().max()) == 0.0
    torch.testing.assert_close(path.diffusion(T64), sd.VESDE().diffusion(T64), rtol=1e-12, atol=0)


def test_bad_shift_and_mu_name_the_argument():
    for kwargs, naming in [({"shift": 0.0}, "shift"), ({"shift": math.inf}, "shift")]:
        with pytest.raises(ValueError, match=naming):
            sd.rectified_flow(**kwargs)
    with pytest.raises(ValueError, match="mu"):
        sd.rectified_flow(mu=math.nan)
    with pytest.raises(TypeError, match="path"):
        sd.shifted(sd.VPSDE(), 2.0)


@pytest.mark.parametrize("name", sorted(PATHS))
def test_every_prediction_type_gives_the_exact_score_on_every_path(name):
    path, g = PATHS[name](), mixture_2d()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=gen, dtype=torch.float64) * 2
    t = torch.rand(64, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    exact = g.exact_score(path)
    truth_score, x0, eps = exact(x, t), exact.x0(x, t), exact.eps(x, t)
    m, s = (c[:, None] for c in path.marginal(t))
    dm, ds = (c[:, None] for c in path.marginal_rate(t))
    nets = {
        "eps": (sd.score_from_eps, eps),
        "x0": (sd.score_from_x0, x0),
        "v": (sd.score_from_v, m * eps - s * x0),
        "flow": (sd.score_from_flow, dm * x0 + ds * eps),
    }
    for kind, (adapter, prediction) in nets.items():
        score = adapter(lambda x_, t_, p=prediction: p, path, min_std=0.0)
        torch.testing.assert_close(score(x, t), truth_score, rtol=1e-9, atol=1e-9, msg=kind)
        torch.testing.assert_close(score.x0(x, t), x0, rtol=1e-9, atol=1e-9, msg=kind)
        torch.testing.assert_close(score.eps(x, t), eps, rtol=1e-9, atol=1e-9, msg=kind)


def test_flow_network_on_rectified_flow_is_eps_minus_x0():
    rf, g = sd.rectified_flow(), mixture_2d()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    t = torch.full((16,), 1.0, dtype=torch.float64)  # m = 0: x0 is still finite from u
    exact = g.exact_score(rf)
    u = exact.eps(x, t) - exact.x0(x, t)
    score = sd.score_from_flow(lambda x_, t_: u, rf)
    torch.testing.assert_close(score.x0(x, t), g.mean.expand(16, 2), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(PATHS))
def test_probability_flow_ode_matches_the_closed_form_flow(name):
    # Gaussian data N(mu, v I): x_t = m_t mu + sqrt(m_t^2 v + s_t^2) z, z fixed by x_T
    path, v, mu = PATHS[name](), 0.5, torch.tensor([0.3, -0.2], dtype=torch.float64)
    data = GaussianMixture([1.0], mu[None], torch.full((1, 2), v, dtype=torch.float64))
    x_T = torch.randn(128, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_T = x_T * path.prior_std
    states = {}
    sol = sd.sample(
        data.exact_score(path), path, x_T=x_T, solver=ODEDopri5(rtol=1e-10, atol=1e-10),
        steps=2, eps=1e-3, callback=lambda k, t, x: states.setdefault(t, x.clone()),
    )  # fmt: skip
    m_T, s_T = (float(c) for c in path.marginal(torch.tensor(path.T, dtype=torch.float64)))
    z = (x_T - m_T * mu) / math.sqrt(m_T**2 * v + s_T**2)
    m_e, s_e = (float(c) for c in path.marginal(sol.times[-2]))
    exact = m_e * mu + math.sqrt(m_e**2 * v + s_e**2) * z
    assert float((states[float(sol.times[-2])] - exact).abs().max()) < 1e-6


def test_cosine_schedule_std_is_zero_not_nan_at_t0_in_float64():
    # log alpha_bar(0) rounded to +3e-20 made sqrt(1 - alpha_bar) NaN before the clamp
    m, s = sd.VPSDE(sd.CosineSchedule()).marginal(torch.zeros(1, dtype=torch.float64))
    assert float(m) == 1.0 and float(s) == 0.0


DETERMINISTIC = [
    ("ode_euler", {}),
    ("ddim", {}),
    ("ode_heun", {}),
    ("edm_heun", {}),
    ("dpm_solver++", {"order": 2}),
    ("dpm_solver++", {"order": 3}),
    ("dpm_solver", {"order": 3}),
    ("dpm_solver++_single", {"order": 3}),
    ("unipc", {}),
    ("deis", {}),
    ("ipndm", {}),
]


def endpoint_error(path, solver, steps, v=0.5):
    """RMS error at eps against the closed-form flow of N(0, v I) data."""
    data = GaussianMixture([1.0], [[0.0, 0.0]], [[v, v]])
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_T = x_T * path.prior_std
    states = {}
    sol = sd.sample(
        data.exact_score(path), path, x_T=x_T, solver=solver, steps=steps, time_grid="logsnr",
        callback=lambda k, t, x: states.__setitem__(k, x.clone()),
    )  # fmt: skip
    m_T, s_T = (float(c) for c in path.marginal(torch.tensor(path.T, dtype=torch.float64)))
    m_e, s_e = (float(c) for c in path.marginal(sol.times[-2]))
    exact = x_T * math.sqrt((m_e**2 * v + s_e**2) / (m_T**2 * v + s_T**2))
    return float((states[steps - 2] - exact).pow(2).mean().sqrt())


@pytest.mark.parametrize("name", ["rectified_flow", "rectified_flow_shift3", "cosine", "ve"])
def test_every_deterministic_solver_shows_its_order_on_the_path(name):
    # On zero-SNR paths the plain limit step's error O(m(t_1)^2) would cap every solver at
    # order 2; third-order ones get the trapezoid-corrected step. Measured on the logsnr grid,
    # 20..160 steps, rectified flow / cosine: DPM-Solver(3) 3.68 / 3.72, DPM-Solver++(3) 3.76 /
    # 3.67 (2.84 / 1.50 uncorrected); Euler and DDIM 0.92, second-order methods 1.77-1.95 and
    # UniPC 2.89 / 3.55. Singlestep DPM-Solver++(3) is not asymptotic at 20-160 steps (its
    # error rises from 19 to 25 steps, then falls), so it is measured over 80-320 steps, where
    # its slope is 2.71 / 2.71 (local slopes 2.68, 2.74, 2.75 up to 640 steps). The bar:
    # min(order, 3) - 0.5.
    path, steps = PATHS[name](), [20, 40, 80, 160]
    slow = []
    for solver_name, options in DETERMINISTIC:
        solver = sd.solvers.get(solver_name, **options)
        ns = [80, 160, 320] if solver_name == "dpm_solver++_single" else steps
        errs = [endpoint_error(path, solver, n) for n in ns]
        slope = -np.polyfit(np.log(ns), np.log(errs), 1)[0]
        if slope < min(solver.order, 3) - 0.5:
            slow.append((solver.describe(), round(slope, 2)))
    assert not slow, slow
