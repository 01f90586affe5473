"""BrownianMemory: one Brownian path per sample, whatever is rejected along the way."""

import pytest
import scipy.stats
import torch

from scoresde.core.brownian_memory import BrownianMemory

B = 20000  # per-sample statistics below: s.e. of a variance v is v * sqrt(2 / B) = 0.01 v


def make(b=B, dim=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    like = torch.zeros(b, dim, dtype=torch.float64)
    draw = lambda: torch.randn(like.shape, generator=gen, dtype=like.dtype)  # noqa: E731
    return BrownianMemory(torch.zeros(b, dtype=torch.float64), like, draw)


def full(v):
    return torch.full((B,), v, dtype=torch.float64)


def test_rejected_value_is_remembered_and_bridged():
    path = make()
    w1 = path.query(full(1.0)).clone()
    path.advance(torch.zeros(B, dtype=torch.bool))  # reject the long step
    w_q = path.query(full(0.25)).clone()
    path.advance(torch.ones(B, dtype=torch.bool))
    assert torch.equal(path.w, w_q) and (path.s == 0.25).all()
    again = path.query(full(1.0))
    assert torch.equal(again, w1)  # the rejected endpoint is the path's value, not redrawn
    path.advance(torch.ones(B, dtype=torch.bool))
    assert (path.count == 0).all()
    a, b = w_q[:, 0], (w1 - w_q)[:, 0]
    # Brownian increments over [0, 1/4] and [1/4, 1]: variances 1/4 and 3/4, uncorrelated;
    # tolerances are 4-5 standard errors at B = 20000
    assert a.var().item() == pytest.approx(0.25, abs=0.012)
    assert b.var().item() == pytest.approx(0.75, abs=0.035)
    assert abs((a * b).mean().item()) < 0.01
    # a point between two known ones comes from the bridge: W(1/2) | W(1/4), W(1)
    path2 = make(seed=1)
    w1 = path2.query(full(1.0)).clone()
    path2.query(full(0.25))
    mid = path2.query(full(0.5))
    w_a = path2.values[:, 0]  # W(1/4), the first of the sorted points
    resid = (mid - w_a - (w1 - w_a) / 3)[:, 0]  # minus the bridge mean at 1/2 between 1/4 and 1
    assert path2.count.max().item() == 3 and torch.equal(path2.values[:, 1], mid)
    assert resid.var().item() == pytest.approx(0.25 * 0.5 / 0.75, abs=0.01)


def random_walk_with_rejections(memory: bool, seed: int = 0) -> torch.Tensor:
    """W(1) from steps that are rejected exactly when their increment is large."""
    gen = torch.Generator().manual_seed(seed)
    draw = lambda: torch.randn(B, 1, generator=gen, dtype=torch.float64)  # noqa: E731
    s, h, w = full(0.0), full(0.25), torch.zeros(B, 1, dtype=torch.float64)
    path = BrownianMemory(s, w, draw)
    for _ in range(5000):
        path.reserve(int(path.count.max()))
        s_next = (s + h).clamp_max(1.0)
        dw = path.query(s_next) - path.w if memory else draw() * (s_next - s).sqrt()[:, None]
        ok = ((dw[:, 0].abs() <= (s_next - s).sqrt()) | (h < 1 / 1024)) & (s < 1)
        if memory:
            path.advance(ok)
        w = torch.where(ok[:, None], w + dw, w)
        s = torch.where(ok, s_next, s)
        h = torch.where(ok, (2 * h).clamp_max(0.25), h / 2)
        if bool((s >= 1).all()):
            return w[:, 0]
    raise AssertionError("walk did not finish")


def test_selection_by_the_noise_does_not_bias_the_path():
    w = random_walk_with_rejections(memory=True)
    # W(1) ~ N(0, 1): variance within 4 s.e. (0.04), and a KS test
    assert w.var().item() == pytest.approx(1.0, abs=0.04)
    assert scipy.stats.kstest(w.numpy(), "norm").pvalue > 1e-3
    # the same walk with a fresh draw on each retry is badly biased (measured variance 0.29)
    assert random_walk_with_rejections(memory=False).var().item() < 0.5


def test_finished_samples_store_nothing_and_capacity_grows():
    path = make(b=3)
    s = torch.tensor([0.5, 0.0, 0.7], dtype=torch.float64)  # sample 1 queries its own position
    for k in range(10):  # repeated rejections: each new point is nearer
        path.reserve(int(path.count.max()))
        path.query(s / (k + 1))
        path.advance(torch.zeros(3, dtype=torch.bool))
    assert path.count.tolist() == [10, 0, 10] and path.capacity >= 10
    assert torch.equal(path.values[1], torch.zeros_like(path.values[1]))
    pts = path.points[0, :10]
    assert (pts[1:] > pts[:-1]).all()  # kept sorted
