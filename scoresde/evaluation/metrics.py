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
    frechet_distance    |m1 - m2|^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2) between the
                        Gaussian fits (mean, covariance) of two feature sets (FID's formula)

Everything random (projections, subsets) draws from a generator with a fixed seed, so a metric
is a deterministic function of its inputs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoresde.evaluation.targets import GaussianMixture

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


class Mixture1D:
    """A 1-D Gaussian mixture sum_k w_k N(mu_k, sd_k^2), with the closed forms W1 needs:

    F(x)  = sum_k w_k Phi(z_k),                     z_k = (x - mu_k) / sd_k
    G(x)  = int_{-inf}^x F = sum_k w_k [(x - mu_k) Phi(z_k) + sd_k phi(z_k)]
    H(x)  = int_x^{inf} (1 - F) = sum_k w_k [sd_k phi(z_k) - (x - mu_k)(1 - Phi(z_k))]
    F^-1  by bisection (monotone, float64).

    ``means`` and ``stds`` may carry leading batch dimensions (P, K): P laws at once, each
    evaluated on its own row of points (P, n).
    """

    def __init__(self, weights: Tensor, means: Tensor, stds: Tensor) -> None:
        self.w, self.mu, self.sd = (
            torch.as_tensor(v, dtype=torch.float64) for v in (weights, means, stds)
        )
        if not bool((self.sd > 0).all()):
            raise ValueError("component standard deviations must be > 0")

    @classmethod
    def projection(cls, target: GaussianMixture, u: Tensor) -> Mixture1D:
        """The law of u.x for x ~ target, for a direction u (d,) or directions (d, P):
        means u.mu_k, variances u' Sigma_k u (shape (K,) or (P, K))."""
        u = u.to(torch.float64)
        cols = u.reshape(u.shape[0], -1)  # (d, P)
        var = torch.einsum("ip,kij,jp->pk", cols, target.covariances, cols)
        mu = (target.means @ cols).T  # (P, K)
        if u.dim() == 1:
            mu, var = mu[0], var[0]
        return cls(target.weights, mu, var.sqrt())

    def _z(self, x: Tensor) -> Tensor:
        return (x[..., None] - self.mu[..., None, :]) / self.sd[..., None, :]

    def cdf(self, x: Tensor) -> Tensor:
        return (self.w * torch.special.ndtr(self._z(x))).sum(-1)

    def pdf(self, x: Tensor) -> Tensor:
        return (self.w * _normal_pdf(self._z(x)) / self.sd[..., None, :]).sum(-1)

    def integral_cdf(self, x: Tensor) -> Tensor:
        z = self._z(x)
        return (self.w * self.sd[..., None, :] * (z * torch.special.ndtr(z) + _normal_pdf(z))).sum(
            -1
        )

    def integral_survival(self, x: Tensor) -> Tensor:
        z = self._z(x)
        return (self.w * self.sd[..., None, :] * (_normal_pdf(z) - z * torch.special.ndtr(-z))).sum(
            -1
        )

    def quantile(self, p: Tensor, iterations: int = 64) -> Tensor:
        lo = torch.full_like(p, float((self.mu - 12 * self.sd).min()))
        hi = torch.full_like(p, float((self.mu + 12 * self.sd).max()))
        for _ in range(iterations):
            mid = (lo + hi) / 2
            below = self.cdf(mid) < p
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return (lo + hi) / 2


def _normal_pdf(z: Tensor) -> Tensor:
    return torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def wasserstein_1d_exact(samples: Tensor, law: Mixture1D, newton: int = 40) -> Tensor:
    """W1 = int |F_n(x) - F(x)| dx between the empirical law of ``samples`` (..., n) and
    ``law`` (one law per leading index), exactly, with no second sample: with x_(1) <= ... <=
    x_(n), F_n = i/n on [x_(i), x_(i+1)], and there int |c - F| splits at q = F^-1(c) clamped
    to the interval into int (c - F) below q and int (F - c) above, each from G = int F; the
    tails are G(x_(1)) and H(x_(n)). q starts from linear interpolation of F across the
    interval and, only in the intervals where F crosses c, takes ``newton`` safeguarded Newton
    steps on F(q) = c bracketed in [a, b] (where an interval spans the plateau between narrow
    modes, the bracket keeps q on the right side). Measured against 64-step global bisection:
    equal to 1.1e-13 relative, 7-12x faster (0.06 s for 64 projections of n = 4000).
    Returns shape (...)."""
    x = torch.sort(samples.to(torch.float64), dim=-1).values
    n = x.shape[-1]
    a, b = x[..., :-1], x[..., 1:]
    c = (torch.arange(1, n, dtype=torch.float64) / n).expand_as(a)
    f_x, g_x = law.cdf(x), law.integral_cdf(x)
    f_a, f_b, g_a, g_b = f_x[..., :-1], f_x[..., 1:], g_x[..., :-1], g_x[..., 1:]
    # without a crossing inside [a, b], F >= c throughout (q = a) or F < c throughout (q = b)
    q = torch.where(f_a >= c, a, b)
    # only intervals where F crosses c need a root (typically O(sqrt(n)) of the n - 1)
    sel = ((f_a < c) & (c < f_b)).nonzero(as_tuple=True)
    lead = sel[:-1]  # which law each selected interval belongs to
    sub = Mixture1D(law.w, law.mu[lead], law.sd[lead]) if lead else law
    shape = (-1, 1) if lead else (-1,)
    lo, hi, cs, fa = a[sel], b[sel], c[sel], f_a[sel]
    qs = lo + (cs - fa) / (f_b[sel] - fa) * (hi - lo)  # start: F linear across [a, b]
    for _ in range(newton):  # safeguarded Newton: F(lo) < c <= F(hi); bisect off-bracket
        gap = sub.cdf(qs.reshape(shape)).reshape(-1) - cs
        lo, hi = torch.where(gap < 0, qs, lo), torch.where(gap >= 0, qs, hi)
        cand = qs - gap / sub.pdf(qs.reshape(shape)).reshape(-1).clamp_min(1e-300)
        qs = torch.where((cand > lo) & (cand < hi), cand, (lo + hi) / 2)
    q = q.index_put(sel, qs)
    g_q = law.integral_cdf(q)
    below = c * (q - a) - (g_q - g_a)  # int_a^q (c - F)
    above = (g_b - g_q) - c * (b - q)  # int_q^b (F - c)
    tails = g_x[..., :1] + law.integral_survival(x[..., -1:])
    return (below + above).sum(-1) + tails.sum(-1)


def sliced_wasserstein_exact(
    x: Tensor, target: GaussianMixture, projections: int = 64, seed: int = 0
) -> float:
    """SW1 of the sample x (n, d) to the target itself: the mean over random unit directions u
    of the exact 1-D W1 between u.x and the projected mixture (no reference sample, so no
    reference noise; the sample's own noise remains, about 1/sqrt(n))."""
    xf = _flat(x)
    u = torch.randn(xf.shape[1], projections, generator=_seeded(seed), dtype=torch.float64)
    u = u / u.norm(dim=0, keepdim=True)
    return float(wasserstein_1d_exact((xf @ u).T, Mixture1D.projection(target, u)).mean())


def sliced_wasserstein_exact_replicates(
    x: Tensor, target: GaussianMixture, projections: int = 64, seed: int = 0
) -> Tensor:
    """``sliced_wasserstein_exact`` of each replicate of x (R, n, ...) at once, on the same
    directions for every replicate; returns (R,)."""
    r, n = x.shape[:2]
    xf = x.reshape(r, n, -1).to(torch.float64)
    u = torch.randn(xf.shape[-1], projections, generator=_seeded(seed), dtype=torch.float64)
    u = u / u.norm(dim=0, keepdim=True)
    law = Mixture1D.projection(target, u)  # (P, K) laws, one per direction
    law = Mixture1D(law.w, law.mu.expand(r, *law.mu.shape), law.sd.expand(r, *law.sd.shape))
    return wasserstein_1d_exact((xf @ u).transpose(1, 2), law).mean(-1)


def sliced_wasserstein(x: Tensor, y: Tensor, projections: int = 256, seed: int = 0) -> float:
    """SW1 between two samples, averaged over ``projections`` random unit directions."""
    x, y = _flat(x), _flat(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"samples have different dimensions: {x.shape[1]} and {y.shape[1]}")
    u = torch.randn(x.shape[1], projections, generator=_seeded(seed), dtype=torch.float64)
    u = u / u.norm(dim=0, keepdim=True)
    return float(wasserstein_1d(x @ u, y @ u).mean())


def gaussian_fit(features: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, covariance) of features (n, d) in float64, covariance with the 1/(n - 1) factor."""
    f = _flat(features).to(torch.float64)
    if f.shape[0] < 2:
        raise ValueError(f"need at least two feature vectors, got {f.shape[0]}")
    return f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(c: Tensor) -> Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix (eigenvalues
    below 0 from round-off are set to 0)."""
    w, v = torch.linalg.eigh((c + c.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mean1: Tensor, cov1: Tensor, mean2: Tensor, cov2: Tensor) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mean1, cov1) and N(mean2, cov2):

        |m1 - m2|^2 + tr(C1) + tr(C2) - 2 tr((C1^1/2 C2 C1^1/2)^1/2).

    The matrix inside the trace is symmetric PSD, so its root comes from one eigh (no
    complex-valued sqrtm); this is FID's formula when the features are a classifier's."""
    m1, m2 = mean1.to(torch.float64), mean2.to(torch.float64)
    c1, c2 = cov1.to(torch.float64), cov2.to(torch.float64)
    if m1.shape != m2.shape or c1.shape != c2.shape or c1.shape != (m1.numel(), m1.numel()):
        raise ValueError(
            f"means {tuple(m1.shape)}, {tuple(m2.shape)} and covariances {tuple(c1.shape)}, "
            f"{tuple(c2.shape)} must be (d,) and (d, d) for one d"
        )
    r1 = _psd_sqrt(c1)
    cross = torch.linalg.eigvalsh(r1 @ c2 @ r1).clamp(min=0).sqrt().sum()
    return float((m1 - m2).square().sum() + c1.trace() + c2.trace() - 2 * cross)


def coupled_error(x: Tensor, reference: Tensor) -> float:
    """E |x - x_ref|: the mean per-sample Euclidean distance between a run and a converged
    reference run from the same x_T (and, for an SDE solver, the same Brownian path).

    The pairs (x_i, x_ref_i) are one coupling of the two laws, so this bounds
    W1(law(x), law(x_ref)); for a deterministic solver whose reference is the exact flow it
    bounds W1 to the target itself. It measures discretisation error with almost none of the
    Monte-Carlo noise of a distance between two samples.
    """
    if x.shape != reference.shape:
        raise ValueError(f"x {tuple(x.shape)} and reference {tuple(reference.shape)} differ")
    return float((_flat(x) - _flat(reference)).norm(dim=1).mean())


def convergence_order(nfe: list[float], errors: list[float]) -> float:
    """The measured order p of error ~ C NFE^-p: minus the least-squares slope of log error
    against log NFE."""
    if len(nfe) != len(errors) or len(nfe) < 2:
        raise ValueError("give at least two (NFE, error) pairs of equal length")
    lx = torch.log(torch.as_tensor(nfe, dtype=torch.float64))
    ly = torch.log(torch.as_tensor(errors, dtype=torch.float64))
    lx = lx - lx.mean()
    return float(-(lx * (ly - ly.mean())).sum() / (lx * lx).sum())


def median_bandwidth(y: Tensor, seed: int = 0) -> float:
    """Median pairwise Euclidean distance of (a subset of at most 1000 points of) y."""
    y = _flat(y)
    if y.shape[0] > 1000:
        y = y[torch.randperm(y.shape[0], generator=_seeded(seed))[:1000]]
    d = torch.cdist(y, y)
    return float(d[torch.triu_indices(*d.shape, offset=1).unbind()].median())


def _rbf(a: Tensor, b: Tensor, h: float) -> Tensor:
    """The kernel matrix exp(-|a_i - b_j|^2 / (2 h^2))."""
    return torch.exp(-torch.cdist(a, b).pow(2) / (2 * h * h))


def _mean_off_diagonal(k: Tensor) -> Tensor:
    """mean_{i != j} k_ij of a square kernel matrix: the unbiased within-sample term."""
    n = k.shape[0]
    return (k.sum() - k.diagonal().sum()) / (n * (n - 1))


def mmd_rbf(x: Tensor, y: Tensor, bandwidth: float | None = None, seed: int = 0) -> float:
    """Unbiased MMD^2 (RBF kernel), on at most MMD_MAX_POINTS points of each sample."""
    x, y = _flat(x), _flat(y)
    gen = _seeded(seed)
    if x.shape[0] > MMD_MAX_POINTS:
        x = x[torch.randperm(x.shape[0], generator=gen)[:MMD_MAX_POINTS]]
    if y.shape[0] > MMD_MAX_POINTS:
        y = y[torch.randperm(y.shape[0], generator=gen)[:MMD_MAX_POINTS]]
    h = median_bandwidth(y, seed) if bandwidth is None else float(bandwidth)
    within = _mean_off_diagonal(_rbf(x, x, h)) + _mean_off_diagonal(_rbf(y, y, h))
    return float(within - 2 * _rbf(x, y, h).mean())


def mmd_to_target(x: Tensor, target: GaussianMixture, bandwidth: float) -> float:
    """Unbiased MMD^2 between the sample x (n, d) and the target law p itself (RBF kernel
    k(a, b) = exp(-|a - b|^2 / (2 h^2))), with p's kernel expectations in closed form:

        MMD^2 = mean_{i != j} k(x_i, x_j) - 2 mean_i E_y k(x_i, y) + E_{y, y'} k(y, y'),
        E_y k(x, y)     = sum_k w_k h^d det(C_k)^(-1/2) exp(-1/2 (x - mu_k)' C_k^-1 (x - mu_k)),
                          C_k = Sigma_k + h^2 I
        E_{y,y'} k      = sum_{k,l} w_k w_l h^d det(C_kl)^(-1/2)
                          exp(-1/2 (mu_k - mu_l)' C_kl^-1 (mu_k - mu_l)),
                          C_kl = Sigma_k + Sigma_l + h^2 I

    (k is (2 pi h^2)^(d/2) times the N(a; b, h^2 I) density, and Gaussians convolve). Only the
    first term is random, so the estimate can be negative; its expectation is exactly MMD^2.
    At most MMD_MAX_POINTS points of x are used (the first ones)."""
    xf = _flat(x)[:MMD_MAX_POINTS]
    n, d, h2 = xf.shape[0], target.dim, float(bandwidth) ** 2
    if n < 2:
        raise ValueError("MMD^2 needs at least 2 samples")
    within = _mean_off_diagonal(_rbf(xf, xf, float(bandwidth)))
    eye, cov = torch.eye(d, dtype=torch.float64), target.covariances
    mu, w = target.means, target.weights

    def gauss_mass(diff: Tensor, c: Tensor) -> Tensor:  # h^d det(c)^-1/2 exp(-1/2 diff' c^-1 diff)
        sol = torch.linalg.solve(c, diff.unsqueeze(-1)).squeeze(-1)
        return h2 ** (d / 2) * torch.exp(-0.5 * (diff * sol).sum(-1) - 0.5 * torch.logdet(c))

    cross = (w * gauss_mass(xf[:, None, :] - mu, cov + h2 * eye)).sum(-1).mean()
    c_kl = cov[:, None] + cov[None, :] + h2 * eye
    both = (w[:, None] * w[None, :] * gauss_mass(mu[:, None] - mu[None, :], c_kl)).sum()
    return float(within - 2 * cross + both)


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
