"""Analytic targets with exact scores: Gaussian mixtures under every linear SDE.

A mixture p_0 = sum_k w_k N(mu_k, Sigma_k) perturbed by x_t = m(t) x_0 + s(t) z stays a mixture:

    p_t = sum_k w_k N(m mu_k, C_k),   C_k = m^2 Sigma_k + s^2 I.

With Sigma_k = U_k diag(lam_k) U_k^T decomposed once, C_k = U_k diag(m^2 lam_k + s^2) U_k^T, so
per-sample times cost no matrix factorisation: project y_k = U_k^T (x - m mu_k) and

    log N_k  = -1/2 sum(y_k^2 / v_k) - 1/2 sum(log v_k) - d/2 log(2 pi),  v_k = m^2 lam_k + s^2
    log p_t  = logsumexp_k(log w_k + log N_k)
    score    = -sum_k r_k U_k (y_k / v_k),   r_k = softmax_k(log w_k + log N_k)  (responsibilities)

x may have any shape (B, ...) whose trailing dimensions hold d numbers in all; t is a scalar
or (B,) tensor. Computation happens in x's dtype on x's device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoresde.core.checks import broadcast_time, check_positive_int
from scoresde.core.sde import SDE


class GaussianMixture:
    """sum_k w_k N(mu_k, Sigma_k) in d dimensions, with exact marginals under any SDE here.

    Args:
        weights: (K,) non-negative, normalised to sum to 1 (their sum must be > 0).
        means: (K, d).
        covariances: (K, d) diagonal variances or (K, d, d) full symmetric positive-definite.
    """

    def __init__(self, weights, means, covariances) -> None:
        w = torch.as_tensor(weights, dtype=torch.float64).flatten()
        mu = torch.as_tensor(means, dtype=torch.float64)
        cov = torch.as_tensor(covariances, dtype=torch.float64)
        if mu.dim() != 2 or mu.shape[0] != w.shape[0]:
            raise ValueError(
                f"means must have shape (K, d) with K = len(weights) = {w.shape[0]}, "
                f"got {tuple(mu.shape)}"
            )
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or not float(w.sum()) > 0:
            raise ValueError("weights must be finite, >= 0, and sum to a positive number")
        k, d = mu.shape
        if cov.shape == (k, d):
            if not bool((cov > 0).all()):
                raise ValueError("diagonal covariances must be > 0 (positive definite)")
            self.diagonal = True
            lam, vecs = cov.clone(), None
        elif cov.shape == (k, d, d):
            if not torch.allclose(cov, cov.transpose(-1, -2), atol=1e-10):
                raise ValueError("covariances must be symmetric")
            lam, vecs = torch.linalg.eigh(cov)
            if not bool((lam > 0).all()):
                raise ValueError("covariances must be positive definite (all eigenvalues > 0)")
            self.diagonal = False
        else:
            raise ValueError(
                f"covariances must have shape (K, d) = {(k, d)} (diagonal) or (K, d, d) = "
                f"{(k, d, d)} (full), got {tuple(cov.shape)}"
            )
        self.weights, self.means, self.dim, self.num_components = w / w.sum(), mu, d, k
        self._lam, self._vecs = lam, vecs
        self._cache: dict[tuple, tuple] = {}

    # -- parameters on the caller's device/dtype ------------------------------------------------
    def _params(self, like: Tensor):
        key = (like.device, like.dtype)
        if key not in self._cache:
            to = {"device": like.device, "dtype": like.dtype}
            self._cache[key] = (
                self.weights.log().to(**to),
                self.means.to(**to),
                self._lam.to(**to),
                None if self._vecs is None else self._vecs.to(**to),
            )
        return self._cache[key]

    @property
    def covariances(self) -> Tensor:
        """(K, d, d) full covariance matrices."""
        if self._vecs is None:
            return torch.diag_embed(self._lam)
        return self._vecs @ torch.diag_embed(self._lam) @ self._vecs.transpose(-1, -2)

    @property
    def mean(self) -> Tensor:
        """Mixture mean sum_k w_k mu_k, (d,)."""
        return self.weights @ self.means

    @property
    def covariance(self) -> Tensor:
        """Mixture covariance sum_k w_k (Sigma_k + mu_k mu_k^T) - mean mean^T, (d, d)."""
        second = torch.einsum("k,kij->ij", self.weights, self.covariances)
        second = second + torch.einsum("k,ki,kj->ij", self.weights, self.means, self.means)
        return second - torch.outer(self.mean, self.mean)

    def _flat(self, x: Tensor) -> Tensor:
        if x.dim() < 1 or x[0].numel() != self.dim:
            raise ValueError(
                f"x must have shape (B, ...) with {self.dim} numbers per sample, "
                f"got {tuple(x.shape)}"
            )
        return x.reshape(x.shape[0], self.dim)

    def _terms(self, x: Tensor, m: Tensor, s: Tensor):
        """Per-component log densities (B, K) and the whitened residuals y / v (B, K, d)."""
        log_w, mu, lam, vecs = self._params(x)
        m = broadcast_time(m.to(x.dtype), x)[..., None]  # (B, 1, 1) or scalar
        s = broadcast_time(s.to(x.dtype), x)[..., None]
        diff = x[:, None, :] - m * mu  # (B, K, d)
        y = diff if vecs is None else torch.einsum("bkd,kde->bke", diff, vecs)
        var = m * m * lam + s * s  # (B or 1, K, d)
        log_n = -0.5 * (
            (y * y / var).sum(-1) + torch.log(var).sum(-1) + self.dim * math.log(2 * math.pi)
        )
        return log_w + log_n, y / var

    def _marginal(self, t: Tensor | float, sde: SDE | None, like: Tensor) -> tuple[Tensor, Tensor]:
        if sde is None:
            one = torch.ones((), device=like.device, dtype=like.dtype)
            return one, torch.zeros_like(one)
        t = torch.as_tensor(t, device=like.device, dtype=like.dtype)
        return sde.marginal(t)

    # -- public ---------------------------------------------------------------------------------
    def log_prob(self, x: Tensor) -> Tensor:
        """log p_0(x) per sample, shape (B,)."""
        xf = self._flat(x)
        m, s = self._marginal(0.0, None, xf)
        return torch.logsumexp(self._terms(xf, m, s)[0], dim=-1)

    def log_prob_t(self, x: Tensor, t: Tensor | float, sde: SDE) -> Tensor:
        """log p_t(x) under ``sde`` per sample, shape (B,)."""
        xf = self._flat(x)
        m, s = self._marginal(t, sde, xf)
        return torch.logsumexp(self._terms(xf, m, s)[0], dim=-1)

    def score(self, x: Tensor, t: Tensor | float, sde: SDE) -> Tensor:
        """grad_x log p_t(x), same shape as x."""
        xf = self._flat(x)
        m, s = self._marginal(t, sde, xf)
        logits, white = self._terms(xf, m, s)
        r = torch.softmax(logits, dim=-1)[..., None]  # (B, K, 1)
        _, _, _, vecs = self._params(xf)
        back = white if vecs is None else torch.einsum("bke,kde->bkd", white, vecs)
        return (-(r * back).sum(1)).reshape(x.shape)

    def x0(self, x: Tensor, t: Tensor | float, sde: SDE) -> Tensor:
        """The exact denoiser E[x_0 | x_t = x] = sum_k r_k (mu_k + m Sigma_k C_k^-1 (x - m mu_k)),
        same shape as x. It equals Tweedie's (x + s^2 score) / m, and stays finite where
        m(t) = 0 (zero terminal SNR: the mixture mean there)."""
        xf = self._flat(x)
        m, s = self._marginal(t, sde, xf)
        logits, white = self._terms(xf, m, s)
        r = torch.softmax(logits, dim=-1)[..., None]  # (B, K, 1)
        _, mu, lam, vecs = self._params(xf)
        shrink = broadcast_time(m.to(xf.dtype), xf)[..., None] * lam * white  # (B, K, d)
        back = shrink if vecs is None else torch.einsum("bke,kde->bkd", shrink, vecs)
        return (r * (mu + back)).sum(1).reshape(x.shape)

    def exact_score(self, sde: SDE) -> ExactScore:
        """This mixture's exact score under ``sde`` as a model: callable as score(x, t), with
        ``eps(x, t)`` and ``x0(x, t)`` (see ``ExactScore``)."""
        return ExactScore(self, sde)

    def eps(self, x: Tensor, t: Tensor | float, sde: SDE) -> Tensor:
        """The ideal noise prediction eps(x, t) = -s(t) score(x, t), same shape as x."""
        xf = self._flat(x)
        s = self._marginal(t, sde, xf)[1]
        return -broadcast_time(s, x) * self.score(x, t, sde)

    def responsibilities(self, x: Tensor) -> Tensor:
        """Posterior component probabilities under p_0, shape (B, K)."""
        xf = self._flat(x)
        m, s = self._marginal(0.0, None, xf)
        return torch.softmax(self._terms(xf, m, s)[0], dim=-1)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """n exact draws from p_0, shape (n, d)."""
        n = check_positive_int("n", n)
        if device is None:
            device = generator.device if generator is not None else "cpu"
        comp = torch.multinomial(self.weights.to(device), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, device=device, dtype=torch.float64)
        lam, mu = self._lam.to(device), self.means.to(device)
        scaled = z * lam[comp].sqrt()
        if self._vecs is not None:
            scaled = torch.einsum("nde,ne->nd", self._vecs.to(device)[comp], scaled)
        return (mu[comp] + scaled).to(dtype)

    def __repr__(self) -> str:
        kind = "diagonal" if self.diagonal else "full"
        return f"GaussianMixture(K={self.num_components}, d={self.dim}, {kind} covariances)"


class ExactScore:
    """A mixture's exact score under one SDE, shaped like a model: ``score(x, t)``, plus the
    ideal ``eps(x, t)`` and denoiser ``x0(x, t)`` that solvers may ask for (the denoiser is
    the one prediction that stays finite where m(t) = 0)."""

    def __init__(self, mixture: GaussianMixture, sde: SDE) -> None:
        self.mixture, self.sde = mixture, sde

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self.mixture.score(x, t, self.sde)

    def eps(self, x: Tensor, t: Tensor) -> Tensor:
        return self.mixture.eps(x, t, self.sde)

    def x0(self, x: Tensor, t: Tensor) -> Tensor:
        return self.mixture.x0(x, t, self.sde)

    def __repr__(self) -> str:
        return f"ExactScore({self.mixture!r}, {self.sde!r})"


def mixture_2d() -> GaussianMixture:
    """The built-in 2-D target: three modes, unequal weights (0.6, 0.3, 0.1), one narrow mode."""
    return GaussianMixture(
        weights=[0.6, 0.3, 0.1],
        means=[[-1.5, 0.0], [1.5, 1.0], [1.0, -1.5]],
        covariances=[
            [[0.30, 0.10], [0.10, 0.20]],
            [[0.15, -0.05], [-0.05, 0.25]],
            [[0.004, 0.0], [0.0, 0.004]],  # narrow: std 0.063
        ],
    )


def mixture_8d() -> GaussianMixture:
    """The built-in 8-D target: four modes with weights (0.4, 0.3, 0.2, 0.1), random full covs."""
    gen = torch.Generator().manual_seed(8)
    d, k = 8, 4
    means = 2.0 * torch.randn(k, d, generator=gen, dtype=torch.float64)
    a = torch.randn(k, d, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    covs = 0.3 * a @ a.transpose(-1, -2) + 0.05 * torch.eye(d, dtype=torch.float64)
    covs[3] = covs[3] * 0.1  # one narrow mode
    return GaussianMixture([0.4, 0.3, 0.2, 0.1], means, covs)


TARGETS = {"gmm2d": mixture_2d, "gmm8d": mixture_8d}
