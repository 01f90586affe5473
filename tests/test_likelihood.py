"""log p(x) through the probability-flow ODE against the mixtures' analytic densities."""

import math

import pytest
import torch
from conftest import gaussian

import scoresde as sd
from scoresde.evaluation.targets import mixture_2d, mixture_8d
from scoresde.likelihood import (
    bits_per_dim,
    decode,
    dequantize,
    encode,
    log_likelihood,
    ode_end,
)

EPS = 1e-5


def _problem(target, n=32, dtype=torch.float64, seed=0):
    sde = sd.VPSDE()
    x = target.sample(n, torch.Generator().manual_seed(seed), dtype=dtype)
    return sde, x, target.exact_score(sde)


def _exact_prior(target, sde):
    # The model's own terminal density: the exact p_T of the mixture, so the only error left is
    # the ODE solve (the N(0, I) prior differs from p_T by up to 5e-3 nats/dim on these targets).
    return lambda z: target.log_prob_t(z, sde.T, sde)


@pytest.mark.parametrize("make", [mixture_2d, mixture_8d], ids=["2d", "8d"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exact_trace_matches_analytic_density(make, dtype):
    target = make()
    sde, x, score = _problem(target, dtype=dtype)
    tol = 1e-7 if dtype == torch.float64 else 1e-5
    res = log_likelihood(
        score, sde, x, rtol=tol, atol=tol, eps=EPS, prior_log_prob=_exact_prior(target, sde)
    )
    truth = target.log_prob_t(x.double(), EPS, sde)
    err_per_dim = (res.log_prob.double() - truth).abs().max().item() / target.dim
    # measured max error, nats/dim: float64 1e-8 (2-D), 1e-6 (8-D); float32 3e-6 (2-D),
    # 4e-4 (8-D). Each dtype and target gets its own bound, ~10x above what was measured.
    bounds = {torch.float64: (1e-7, 1e-5), torch.float32: (5e-5, 4e-3)}
    bound = bounds[dtype][0 if target.dim == 2 else 1]
    assert err_per_dim < bound
    assert res.log_prob.shape == (x.shape[0],) and res.z.shape == x.shape
    assert res.nfe == res.stats["nfe"] > 0 and res.stderr is None


def test_default_prior_gap_is_the_terminal_mismatch():
    target = mixture_8d()
    sde, x, score = _problem(target)
    res = log_likelihood(score, sde, x, rtol=1e-7, atol=1e-7, eps=EPS)
    gap = target.log_prob_t(res.z, sde.T, sde) - sde.prior_log_prob(res.z)
    truth = target.log_prob_t(x, EPS, sde)
    torch.testing.assert_close(res.log_prob + gap, truth, atol=1e-5, rtol=0)
    assert gap.abs().max() > 1e-3  # the gap is real here, so the check above has teeth


@pytest.mark.parametrize("path", [sd.rectified_flow, sd.cosine_path], ids=["rf", "cosine"])
def test_zero_terminal_snr_paths_end_the_ode_below_t(path):
    """m(T) = 0: the ODE stops at t_end where m = 1e-4. With the mixture's exact density at
    t_end as the prior, log p_eps is exact up to the ODE's tolerance (measured: 1e-6
    nats/dim); with the default N(0, s(t_end)^2 I), the neglected mean m x_0 adds up to
    5e-5 nats/dim (measured), bounded here at 2e-4."""
    target = mixture_8d()
    sde = path()
    x = target.sample(32, torch.Generator().manual_seed(0), dtype=torch.float64)
    t_end = ode_end(sde)
    m_end = float(sde.marginal(torch.tensor(t_end, dtype=torch.float64))[0])
    assert t_end < sde.T and abs(m_end - 1e-4) < 1e-12
    truth = target.log_prob_t(x, EPS, sde)
    for prior, bound in ((lambda z: target.log_prob_t(z, t_end, sde), 1e-5), (None, 2e-4)):
        res = log_likelihood(target.exact_score(sde), sde, x, rtol=1e-7, atol=1e-7, eps=EPS,
                             prior_log_prob=prior)  # fmt: skip
        assert (res.log_prob - truth).abs().max().item() / target.dim < bound


def test_encode_and_decode_refuse_a_zero_terminal_snr_path():
    target = mixture_2d()
    sde = sd.rectified_flow()
    x = target.sample(4, torch.Generator().manual_seed(0), dtype=torch.float64)
    for flow in (encode, decode):
        with pytest.raises(ValueError, match=r"m\(T\) = 0"):
            flow(target.exact_score(sde), sde, x)


def test_torch_and_scipy_backends_agree():
    target = mixture_2d()
    sde, x, score = _problem(target, n=16)
    a = log_likelihood(score, sde, x, solver="dopri5", rtol=1e-8, atol=1e-8)
    b = log_likelihood(score, sde, x, solver="scipy", rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(a.log_prob, b.log_prob, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.z, b.z, atol=1e-6, rtol=0)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_within_its_standard_error(probe):
    target = mixture_8d()
    sde, x, score = _problem(target, n=48)
    exact = log_likelihood(score, sde, x, rtol=1e-6, atol=1e-6)
    est = log_likelihood(
        score,
        sde,
        x,
        trace="hutchinson",
        probes=64,
        probe=probe,
        rtol=1e-6,
        atol=1e-6,
        generator=torch.Generator().manual_seed(3),
    )
    z = (est.log_prob - exact.log_prob) / est.stderr
    # With 64 probes the per-sample estimates are close to normal: |z| < 4 everywhere and about
    # 95 % within 2 (measured max |z| 1.8-3.5 and 0.92-1.0 within 2 over six probe seeds).
    assert z.abs().max() < 4
    assert (z.abs() < 2).double().mean() > 0.8
    assert (est.stderr > 0).all()
    one = log_likelihood(
        score, sde, x[:2], trace="hutchinson", probes=1, generator=torch.Generator().manual_seed(0)
    )
    assert torch.isnan(one.stderr).all()


def test_hutchinson_is_reproducible_with_a_generator():
    target = mixture_2d()
    sde, x, score = _problem(target, n=8)

    def run():
        return log_likelihood(
            score, sde, x, trace="hutchinson", probes=4, generator=torch.Generator().manual_seed(5)
        ).log_prob

    assert torch.equal(run(), run())


@pytest.mark.parametrize("make", [mixture_2d, mixture_8d], ids=["2d", "8d"])
def test_decode_inverts_encode(make):
    target = make()
    sde, x, score = _problem(target)
    z = encode(score, sde, x, rtol=1e-7, atol=1e-7)
    back = decode(score, sde, z.value, rtol=1e-7, atol=1e-7)
    # measured max |x - decode(encode(x))| = 4e-7 (2-D), 8e-7 (8-D) at tolerance 1e-7
    assert (back.value - x).abs().max() < 1e-5
    # the latent is close to the prior: whitened, so its std is near 1
    assert 0.7 < z.value.std().item() < 1.3
    assert z.nfe > 0 and back.nfe > 0


def test_bits_per_dim_by_hand():
    # -log p = 5 nats over D = 3 dims: 5 / (3 ln 2) = 2.404491 bits, plus log2(256 / 2) = 7.
    lp = torch.tensor([-5.0], dtype=torch.float64)
    assert bits_per_dim(lp, 3).item() == pytest.approx(9.404491, abs=1e-6)
    assert bits_per_dim(lp, 3, data_range=(0, 1)).item() == pytest.approx(10.404491, abs=1e-6)
    assert bits_per_dim(lp, 3, data_range=(0, 256)).item() == pytest.approx(2.404491, abs=1e-6)
    # The uniform density on [-1, 1]^D puts 1/256 on every level: exactly 8 bits per dim.
    d = 5
    assert bits_per_dim(torch.tensor([-d * math.log(2.0)]), d).item() == pytest.approx(8.0)


def test_dequantize_lands_in_the_right_bin():
    k = torch.arange(256).repeat(4)
    y = dequantize(k, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert y.min() >= -1 and y.max() < 1
    assert torch.equal(torch.floor((y + 1) / (2 / 256)).long(), k)
    with pytest.raises(ValueError, match="k must lie in"):
        dequantize(torch.tensor([256]))
    with pytest.raises(ValueError, match="integer levels"):
        dequantize(torch.tensor([0.5]))


def test_bad_input():
    target = mixture_2d()
    sde, x, score = _problem(target, n=4)
    with pytest.raises(ValueError, match="at least one data dimension"):
        log_likelihood(score, sde, x[:, 0])
    with pytest.raises(ValueError, match="score returned shape"):
        log_likelihood(lambda x, t: x[:, :1], sde, x)
    with pytest.raises(ValueError, match="score returned a tensor on meta"):
        log_likelihood(lambda x, t: torch.empty_like(x, device="meta"), sde, x)
    for kw, match in [
        ({"rtol": 0.0}, "rtol"),
        ({"atol": -1e-5}, "atol"),
        ({"trace": "diagonal"}, "unknown trace 'diagonal'; known: exact, hutchinson"),
        ({"probe": "sphere"}, "unknown probe 'sphere'; known: rademacher, gaussian"),
        ({"solver": "euler"}, "unknown ODE solver 'euler'; known: dopri5, scipy"),
        ({"probes": 0}, "probes"),
        ({"eps": 2.0}, r"eps must lie in \(0, 1\)"),
    ]:
        with pytest.raises(ValueError, match=match):
            log_likelihood(score, sde, x, **kw)
    with pytest.raises(ValueError, match="data_range"):
        bits_per_dim(torch.zeros(1), 2, data_range=(1, -1))


def test_likelihood_command(capsys):
    from scoresde.commands.cli import main

    assert main(["likelihood", "--samples", "64"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["gmm2d"], ["gmm8d"])]
    assert [r[0] for r in rows] == ["gmm2d", "gmm8d"]
    for r in rows:
        est, exact, diff = float(r[2]), float(r[3]), float(r[4])
        assert diff == pytest.approx(abs(est - exact), abs=2e-5)
        assert diff < 1e-3  # exact trace: ODE error plus the small prior gap (~1e-4 per dim)
        assert int(r[7]) > 0
    assert main(["likelihood", "--samples", "8", "--target", "gmm3d"]) == 2
    assert "unknown target 'gmm3d'" in capsys.readouterr().err


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE()], ids=["vp", "subvp", "ve"])
def test_encode_and_decode_follow_the_closed_form_flow_of_gaussian_data(sde):
    """For data N(0, V I) the probability-flow ODE is linear and keeps every marginal
    N(0, v(t) I), v = m^2 V + s^2: x_T = x_eps sqrt(v(T) / v(eps)) exactly."""
    score, v = gaussian(sde, var=0.3)
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ratio = math.sqrt(v(sde.T) / v(EPS))
    z = encode(score, sde, x, rtol=1e-9, atol=1e-9, eps=EPS)
    torch.testing.assert_close(z.value, x * ratio, rtol=1e-6, atol=0)
    back = decode(score, sde, x, rtol=1e-9, atol=1e-9, eps=EPS)
    torch.testing.assert_close(back.value, x / ratio, rtol=1e-6, atol=0)
    assert abs(ratio - 1) > 0.5  # an identity encode or decode fails
