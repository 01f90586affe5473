import math

import pytest
import torch

import scoresde as sd
from scoresde.evaluation.targets import GaussianMixture, mixture_2d, mixture_8d


def test_mixture_score_equals_autograd_of_log_prob_t(any_sde):
    for g in (
        mixture_2d(),
        mixture_8d(),
        GaussianMixture([1, 2], [[0.0, 1, 2], [1, -1, 0]], [[0.5, 1, 2], [0.1, 0.2, 0.3]]),
    ):
        x = torch.randn(64, g.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        t = (
            torch.rand(64, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.99
            + 0.01
        )
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(g.log_prob_t(xr, t, any_sde).sum(), xr)
        torch.testing.assert_close(g.score(x, t, any_sde), grad, rtol=1e-8, atol=1e-9)


def test_mixture_log_prob_against_torch_distributions():
    g = mixture_8d()
    comps = torch.distributions.MultivariateNormal(g.means, covariance_matrix=g.covariances)
    mix = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(g.weights), comps)
    x = g.sample(500, torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(g.log_prob(x), mix.log_prob(x))
    # under an SDE: component k becomes N(m mu_k, m^2 Sigma_k + s^2 I)
    sde, t = sd.VPSDE(), 0.4
    m, s = (float(v) for v in sde.marginal(torch.tensor(t, dtype=torch.float64)))
    cov_t = m * m * g.covariances + s * s * torch.eye(8, dtype=torch.float64)
    comps_t = torch.distributions.MultivariateNormal(m * g.means, covariance_matrix=cov_t)
    mix_t = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(g.weights), comps_t
    )
    torch.testing.assert_close(g.log_prob_t(x, t, sde), mix_t.log_prob(x))


def test_mixture_sample_moments():
    g = mixture_2d()
    x = g.sample(200_000, torch.Generator().manual_seed(0), dtype=torch.float64)
    # sampling noise of the mean ~ std/sqrt(n) = 3e-3; 5 sigma
    torch.testing.assert_close(x.mean(0), g.mean, atol=0.015, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), g.covariance, atol=0.03, rtol=0)


def test_mixture_any_shape():
    g = GaussianMixture([1.0], torch.zeros(1, 12), torch.ones(1, 12))
    x = torch.randn(5, 3, 2, 2)
    out = g.score(x, torch.full((5,), 0.5), sd.VPSDE())
    assert out.shape == x.shape
    torch.testing.assert_close(out, -x)  # N(0, I) is invariant under VP: score = -x


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([0.0, 0.0], [[0.0], [1.0]], [[1.0], [1.0]]), "sum to a positive"),
        (([1.0, -1.0], [[0.0], [1.0]], [[1.0], [1.0]]), ">= 0"),
        (([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]]), "positive definite"),
        (([1.0], [[0.0, 0.0]], [[0.0, 1.0]]), "positive definite"),
        (([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]]), "symmetric"),
        (([1.0, 1.0], [[0.0, 0.0]], [[1.0, 1.0]]), "means must have shape"),
        (([1.0], [[0.0, 0.0]], [[1.0, 1.0, 1.0]]), "covariances must have shape"),
    ],
)
def test_mixture_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(*args)


def test_score_from_eps_round_trip(any_sde):
    g = mixture_2d()
    x = torch.randn(32, 2, dtype=torch.float64)
    t = torch.rand(32, dtype=torch.float64) * 0.9 + 0.05
    exact = g.score(x, t, any_sde)
    score = sd.score_from_eps(g.exact_score(any_sde).eps, any_sde)
    torch.testing.assert_close(score(x, t), exact)
    torch.testing.assert_close(sd.eps_from_score(score, any_sde)(x, t), g.eps(x, t, any_sde))
    torch.testing.assert_close(score.eps(x, t), g.eps(x, t, any_sde))
    # x0 parameterisation via Tweedie, and back
    x0_fn = sd.x0_from_score(g.exact_score(any_sde), any_sde)
    torch.testing.assert_close(sd.score_from_x0(x0_fn, any_sde)(x, t), exact)


def test_score_from_v_vp():
    sde, g = sd.VPSDE(), mixture_2d()
    x = torch.randn(16, 2, dtype=torch.float64)
    t = torch.rand(16, dtype=torch.float64) * 0.9 + 0.05
    m, s = (v.view(16, 1) for v in sde.marginal(t))
    eps = g.eps(x, t, sde)
    x0 = (x - s * eps) / m
    v = m * eps - s * x0  # Salimans & Ho's definition
    torch.testing.assert_close(sd.score_from_v(lambda x_, t_: v, sde)(x, t), g.score(x, t, sde))
    # on sub-VP m^2 + s^2 != 1: the general inversion eps = (s x + m v) / (m^2 + s^2) holds
    sub = sd.SubVPSDE()
    m, s = (c.view(16, 1) for c in sub.marginal(t))
    eps = g.eps(x, t, sub)
    v = m * eps - s * (x - s * eps) / m
    torch.testing.assert_close(sd.score_from_v(lambda x_, t_: v, sub)(x, t), g.score(x, t, sub))


def test_time_labels():
    t = torch.tensor([1.0, 0.5, 0.001, 1e-9])
    assert sd.discrete_index(1000)(t).tolist() == [999, 499, 0, 0]
    assert sd.discrete_index(1000)(t).dtype == torch.int64
    torch.testing.assert_close(sd.scaled_time(999)(t), t * 999)
    seen = []
    score = sd.score_from_eps(
        lambda x, lab: seen.append(lab) or torch.zeros_like(x), sd.VPSDE(), sd.discrete_index(10)
    )
    score(torch.zeros(2, 3), torch.tensor([0.3, 1.0]))
    assert seen[0].tolist() == [2, 9]


def test_no_inf_at_t_zero():
    sde = sd.VPSDE()
    score = sd.score_from_eps(lambda x, t: torch.ones_like(x), sde)
    out = score(torch.zeros(2, 2), torch.zeros(2))
    assert torch.isfinite(out).all()
    assert out.abs().max().item() == pytest.approx(1e5)  # clamped at min_std = 1e-5


def test_network_shape_and_dtype_policy():
    sde = sd.VPSDE()
    bad = sd.score_from_eps(lambda x, t: x[:, :1], sde)
    with pytest.raises(ValueError, match="must return a tensor of x's shape"):
        bad(torch.zeros(2, 3), torch.full((2,), 0.5))
    half = sd.score_from_eps(lambda x, t: x.to(torch.bfloat16), sde)
    assert half(torch.ones(2, 3), torch.full((2,), 0.5)).dtype == torch.float32
    assert math.isfinite(half(torch.ones(2, 3), torch.full((2,), 0.5)).sum().item())


def test_adapter_unwraps_an_output_object_with_sample():
    """diffusers' models return an output object whose ``.sample`` is the prediction."""

    class Output:
        def __init__(self, sample):
            self.sample = sample

    sde = sd.VPSDE()
    x, t = torch.randn(3, 2), torch.full((3,), 0.4)
    plain = sd.score_from_eps(lambda x, t: 0.5 * x, sde)
    wrapped = sd.score_from_eps(lambda x, t: Output(0.5 * x), sde)
    torch.testing.assert_close(wrapped(x, t), plain(x, t))
    with pytest.raises(TypeError, match="must return a tensor"):
        sd.score_from_eps(lambda x, t: object(), sde)(x, t)
