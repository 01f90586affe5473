"""Sample-quality measures of samples x (n, d) against a target with known density.

    sliced_wasserstein  SW1 = mean over random unit directions u of W1(u.x, u.y), where the
                        1-D W1 is the mean absolute difference of matched quantiles
    mmd_rbf             unbiased MMD^2 with the RBF kernel k(a, b) = exp(-|a - b|^2 / (2 h^2));
                        bandwidth h = median pairwise distance of the pooled reference sample
                        (the "median heuristic"), unless given
    mean_error          |mean(x) - mean_p|  (Euclidean)
    covariance_error    |cov(x) - cov_p|_F / |cov_p|_F  (relative Frobenius)
    mode_weight_error   total variation between the fraction of samples assigned to each
                        component (largest responsibility) and the mixture weights
    cross_entropy       -mean log p(x): the cross-entropy of the samples under the true density
                        (per sample, nats); equals the target's entropy at perfect sampling

Everything random (projections, subsets) draws from a generator with a fixed seed, so a metric
is a deterministic function of its inputs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoresde.targets import GaussianMixture

MMD_MAX_POINTS = 2000


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).to(torch.float64)


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def wasserstein_1d(a: Tensor, b: Tensor) -> Tensor:
    """W1 between the empirical laws of the columns of a (n, p) and b (m, p); returns (p,).

    Computed from quantile functions on the merged grid of levels (exact for any n, m)."""
    a, b = torch.sort(a, dim=0).values, torch.sort(b, dim=0).values
    n, m = a.shape[0], b.shape[0]
    if n == m:
        return (a - b).abs().mean(0)
    f64 = torch.float64  # levels in float64: float32 quantile levels are off by ~1e-8
    levels = torch.cat(
        [torch.arange(1, n + 1, dtype=f64) / n, torch.arange(1, m + 1, dtype=f64) / m]
    )
    levels = torch.sort(levels).values
    widths = torch.diff(torch.cat([torch.zeros(1, dtype=torch.float64), levels]))
    mids = (levels - widths / 2).clamp(0, 1 - 1e-12)
    qa = a[(mids * n).long().clamp(max=n - 1)]
    qb = b[(mids * m).long().clamp(max=m - 1)]
    return ((qa - qb).abs() * widths[:, None]).sum(0)


def sliced_wasserstein(x: Tensor, y: Tensor, projections: int = 256, seed: int = 0) -> float:
    """SW1 between two samples, averaged over ``projections`` random unit directions."""
    x, y = _flat(x), _flat(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"samples have different dimensions: {x.shape[1]} and {y.shape[1]}")
    u = torch.randn(x.shape[1], projections, generator=_seeded(seed), dtype=torch.float64)
    u = u / u.norm(dim=0, keepdim=True)
    return float(wasserstein_1d(x @ u, y @ u).mean())


def median_bandwidth(y: Tensor, seed: int = 0) -> float:
    """Median pairwise Euclidean distance of (a subset of at most 1000 points of) y."""
    y = _flat(y)
    if y.shape[0] > 1000:
        y = y[torch.randperm(y.shape[0], generator=_seeded(seed))[:1000]]
    d = torch.cdist(y, y)
    return float(d[torch.triu_indices(*d.shape, offset=1).unbind()].median())


def mmd_rbf(x: Tensor, y: Tensor, bandwidth: float | None = None, seed: int = 0) -> float:
    """Unbiased MMD^2 (RBF kernel), on at most MMD_MAX_POINTS points of each sample."""
    x, y = _flat(x), _flat(y)
    gen = _seeded(seed)
    if x.shape[0] > MMD_MAX_POINTS:
        x = x[torch.randperm(x.shape[0], generator=gen)[:MMD_MAX_POINTS]]
    if y.shape[0] > MMD_MAX_POINTS:
        y = y[torch.randperm(y.shape[0], generator=gen)[:MMD_MAX_POINTS]]
    h = median_bandwidth(y, seed) if bandwidth is None else float(bandwidth)

    def k(a: Tensor, b: Tensor) -> Tensor:
        return torch.exp(-torch.cdist(a, b).pow(2) / (2 * h * h))

    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.mean())


def mean_error(x: Tensor, target: GaussianMixture) -> float:
    return float((_flat(x).mean(0) - target.mean).norm())


def covariance_error(x: Tensor, target: GaussianMixture) -> float:
    cov = torch.cov(_flat(x).T).reshape(target.dim, target.dim)
    return float((cov - target.covariance).norm() / target.covariance.norm())


def mode_weights(x: Tensor, target: GaussianMixture) -> Tensor:
    """Fraction of samples whose most responsible component is k, (K,)."""
    idx = target.responsibilities(_flat(x)).argmax(dim=1)
    return torch.bincount(idx, minlength=target.num_components).to(torch.float64) / x.shape[0]


def mode_weight_error(x: Tensor, target: GaussianMixture) -> float:
    return float(0.5 * (mode_weights(x, target) - target.weights).abs().sum())


def cross_entropy(x: Tensor, target: GaussianMixture) -> float:
    """-mean log p(x) in nats per sample; non-finite samples give +inf."""
    lp = target.log_prob(_flat(x))
    return float(-lp.mean()) if bool(torch.isfinite(lp).all()) else math.inf


METRICS = ("sw1", "mmd", "mean_err", "cov_err", "mode_err", "xent")


def all_metrics(x: Tensor, reference: Tensor, target: GaussianMixture | None) -> dict[str, float]:
    """Every metric of ``x``: distances to the ``reference`` sample, the rest against the target.

    Without an analytic target (a user model) only the reference-based metrics are returned.
    """
    out = {"sw1": sliced_wasserstein(x, reference), "mmd": mmd_rbf(x, reference)}
    if target is not None:
        out |= {
            "mean_err": mean_error(x, target),
            "cov_err": covariance_error(x, target),
            "mode_err": mode_weight_error(x, target),
            "xent": cross_entropy(x, target),
        }
    return out
