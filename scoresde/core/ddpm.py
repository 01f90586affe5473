"""The DDPM posterior q(x_{t-1} | x_t, x_0) and the reverse mean from a noise prediction.

Notation (Ho et al. 2020): alpha_bar_t and alpha_bar_prev = alpha_bar_{t-1} are the cumulative
products at two consecutive grid points, alpha_t = alpha_bar_t / alpha_bar_prev,
beta_t = 1 - alpha_t. Then q(x_{t-1} | x_t, x_0) = N(mu~, beta~ I) with

    mu~   = sqrt(alpha_bar_prev) beta_t / (1 - alpha_bar_t) x_0
          + sqrt(alpha_t) (1 - alpha_bar_prev) / (1 - alpha_bar_t) x_t
    beta~ = (1 - alpha_bar_prev) beta_t / (1 - alpha_bar_t)

and substituting x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t) gives the reverse
mean mu = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t).

``alpha_bar_t``/``alpha_bar_prev`` may be Python floats, 0-d tensors, or (B,) per-sample
tensors; they are broadcast against x (B, ...). The general Gaussian form behind these,
``gaussian_posterior``, is what the ancestral sampler uses for every SDE.

``variational_bound`` is Ho et al.'s L_vlb (prior term, per-step KL between these Gaussian
posteriors and the model's reverse steps, discretised decoder): the discrete-time likelihood
bound, in nats or bits/dim, to set beside the probability-flow ODE's (``scoresde.likelihood``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from scoresde.core.checks import broadcast_time, check_positive_int
from scoresde.core.schedules import DiscreteSchedule


def _coef(value: Tensor | float, x: Tensor) -> Tensor:
    v = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    return broadcast_time(v, x)


def gaussian_posterior(
    m_s: Tensor, var_s: Tensor, r: Tensor, w: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Coefficients of q(x_s | x_t, x_0) for x_s ~ N(m_s x_0, var_s), x_t | x_s ~ N(r x_s, w).

    Returns (c_x0, c_xt, var) with mean = c_x0 x_0 + c_xt x_t, by completing the square:
    var = var_s w / var_t, c_x0 = w m_s / var_t, c_xt = r var_s / var_t, var_t = w + r^2 var_s.
    """
    var_t = w + r * r * var_s
    return w * m_s / var_t, r * var_s / var_t, var_s * w / var_t


def _check_alpha_bars(alpha_bar_t: Tensor | float, alpha_bar_prev: Tensor | float) -> None:
    ab_t = torch.as_tensor(alpha_bar_t)
    ab_p = torch.as_tensor(alpha_bar_prev)
    if not bool(((ab_t > 0) & (ab_t < 1)).all()):
        raise ValueError("alpha_bar_t must lie in (0, 1)")
    if not bool(((ab_p > 0) & (ab_p <= 1)).all()):
        raise ValueError("alpha_bar_prev must lie in (0, 1]")
    if not bool((ab_p > ab_t).all()):
        raise ValueError("alpha_bar_prev must be larger than alpha_bar_t (it is the earlier time)")


def posterior_mean_variance(
    x0: Tensor, x_t: Tensor, alpha_bar_t: Tensor | float, alpha_bar_prev: Tensor | float
) -> tuple[Tensor, Tensor]:
    """(mu~, beta~) of q(x_{t-1} | x_t, x_0); beta~ is broadcast like the alpha_bars."""
    if x0.shape != x_t.shape:
        raise ValueError(
            f"x0 and x_t must have one shape, got {tuple(x0.shape)} and {tuple(x_t.shape)}"
        )
    _check_alpha_bars(alpha_bar_t, alpha_bar_prev)
    ab_t, ab_p = _coef(alpha_bar_t, x_t), _coef(alpha_bar_prev, x_t)
    r2 = ab_t / ab_p  # alpha_t
    c_x0, c_xt, var = gaussian_posterior(torch.sqrt(ab_p), 1 - ab_p, torch.sqrt(r2), 1 - r2)
    return c_x0 * x0 + c_xt * x_t, var


def reverse_mean_from_eps(
    x_t: Tensor, eps: Tensor, alpha_bar_t: Tensor | float, alpha_bar_prev: Tensor | float
) -> Tensor:
    """mu = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t)."""
    _check_alpha_bars(alpha_bar_t, alpha_bar_prev)
    ab_t, ab_p = _coef(alpha_bar_t, x_t), _coef(alpha_bar_prev, x_t)
    alpha_t = ab_t / ab_p
    return (x_t - (1 - alpha_t) / torch.sqrt(1 - ab_t) * eps) / torch.sqrt(alpha_t)


def predict_x0_from_eps(x_t: Tensor, eps: Tensor, alpha_bar_t: Tensor | float) -> Tensor:
    """x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
    ab_t = _coef(alpha_bar_t, x_t)
    if not bool(((ab_t > 0) & (ab_t <= 1)).all()):
        raise ValueError("alpha_bar_t must lie in (0, 1]")
    return (x_t - torch.sqrt(1 - ab_t) * eps) / torch.sqrt(ab_t)


# -- the variational bound (Ho et al. 2020, eq. 5) --------------------------------------------

VARIANCES = ("posterior", "beta")
EpsFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class VLBTerms:
    """Ho et al.'s L_vlb per data point, in nats, split into its terms:

        prior    L_T = KL(q(x_N | x_0) || N(0, I))                                     (B,)
        kl       L_{i-1} = KL(q(x_{i-1} | x_i, x_0) || p(x_{i-1} | x_i)), i = 2..N  (B, N-1)
        decoder  L_0 = -log p(x_0 | x_1)                                               (B,)

    ``total`` = prior + sum(kl) + decoder is an upper bound on -log p(x_0) (a probability
    for the discretised decoder, a density for the Gaussian one). ``dims`` = D per sample.
    """

    prior: Tensor
    kl: Tensor
    decoder: Tensor
    dims: int

    @property
    def total(self) -> Tensor:
        return self.prior + self.kl.sum(dim=1) + self.decoder

    def bits_per_dim(self) -> Tensor:
        """total / (D ln 2), per data point."""
        return self.total / (self.dims * math.log(2))


def _flat_sum(v: Tensor) -> Tensor:
    return v.reshape(v.shape[0], -1).sum(dim=1)


def gaussian_kl(mean1: Tensor, var1: Tensor, mean2: Tensor, var2: Tensor) -> Tensor:
    """KL(N(mean1, var1) || N(mean2, var2)) per element (diagonal Gaussians):
    1/2 (log(var2 / var1) + var1 / var2 + (mean1 - mean2)^2 / var2 - 1)."""
    return 0.5 * (torch.log(var2 / var1) + var1 / var2 + (mean1 - mean2).square() / var2 - 1)


def _table(schedule: DiscreteSchedule, x: Tensor) -> tuple[Tensor, Tensor]:
    """(alpha_bar, beta) for i = 1..N as float64 (N,) tensors on x's device."""
    if not isinstance(schedule, DiscreteSchedule):
        raise TypeError(f"schedule must be a DiscreteSchedule, got {type(schedule).__name__}")
    ab = schedule.alphas_cumprod.to(device=x.device)
    return ab, schedule.betas.to(device=x.device)


def _model_variance(schedule: DiscreteSchedule, x: Tensor, variance: str) -> Tensor:
    """sigma_i^2 of p(x_{i-1} | x_i), i = 1..N: beta~_i ("posterior") or beta_i ("beta"), and
    for i = 1 (where beta~_1 = 0) beta~_2, as in Ho et al.'s code."""
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    ab, beta = _table(schedule, x)
    if ab.numel() < 2:
        raise ValueError("the variational bound needs a table of at least 2 timesteps")
    ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
    var = (1 - ab_prev) * beta / (1 - ab) if variance == "posterior" else beta.clone()
    var[0] = (1 - ab[0]) * beta[1] / (1 - ab[1])
    return var


def prior_kl(schedule: DiscreteSchedule, x0: Tensor) -> Tensor:
    """L_T = KL(N(sqrt(alpha_bar_N) x_0, (1 - alpha_bar_N) I) || N(0, I)), summed over dims:
    (B,)."""
    ab_n = _table(schedule, x0)[0][-1].to(x0.dtype)
    mean, var = ab_n.sqrt() * x0, (1 - ab_n).expand_as(x0)
    return _flat_sum(gaussian_kl(mean, var, torch.zeros_like(x0), torch.ones_like(x0)))


def _noised(
    x0: Tensor, ab: Tensor, generator: torch.Generator | None, noise: Tensor | None
) -> Tensor:
    """x_i = sqrt(alpha_bar_i) x_0 + sqrt(1 - alpha_bar_i) z, z = ``noise`` or a fresh draw."""
    if noise is None:
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise must have x0's shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
    else:
        z = noise.to(x0.dtype)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * z


def _model_mean(eps: EpsFn, x_t: Tensor, i: int, n: int, ab: Tensor, ab_prev: Tensor) -> Tensor:
    t = torch.full((x_t.shape[0],), i / n, device=x_t.device, dtype=x_t.dtype)
    return reverse_mean_from_eps(x_t, eps(x_t, t).to(x_t.dtype), ab, ab_prev)


def posterior_kl(
    eps: EpsFn,
    schedule: DiscreteSchedule,
    x0: Tensor,
    i: int,
    *,
    variance: str = "posterior",
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """L_{i-1} for 2 <= i <= N at one draw x_i ~ q(x_i | x_0), summed over dims: (B,).
    ``noise`` (x0's shape) fixes the standard normal draw of x_i; otherwise ``generator``.

    KL(N(mu~(x_i, x_0), beta~_i) || N(mu(x_i), sigma_i^2)) with mu~ and beta~ from
    ``posterior_mean_variance`` and mu from ``reverse_mean_from_eps`` of eps(x_i, t = i/N)."""
    n = schedule.num_timesteps
    if not 2 <= i <= n:
        raise ValueError(f"i must lie in [2, {n}], got {i}")
    ab, _ = _table(schedule, x0)
    ab_t, ab_p = ab[i - 1].to(x0.dtype), ab[i - 2].to(x0.dtype)
    x_t = _noised(x0, ab_t, generator, noise)
    mean_q, var_q = posterior_mean_variance(x0, x_t, ab_t, ab_p)
    var_p = _model_variance(schedule, x0, variance)[i - 1].to(x0.dtype)
    mean_p = _model_mean(eps, x_t, i, n, ab_t, ab_p)
    return _flat_sum(gaussian_kl(mean_q, var_q.expand_as(x0), mean_p, var_p.expand_as(x0)))


def _log_bin_mass(lower: Tensor, upper: Tensor) -> Tensor:
    """log(Phi(upper) - Phi(lower)) for lower < upper (either may be infinite), computed in
    the tail where it is accurate: both standardised ends are mirrored to the left side."""
    flip = (lower + upper) > 0
    a = torch.where(flip, -upper, lower)
    b = torch.where(flip, -lower, upper)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return log_b + torch.log1p(-torch.exp(log_a - log_b).clamp(max=1 - 1e-12))


def decoder_nll(
    eps: EpsFn,
    schedule: DiscreteSchedule,
    x0: Tensor,
    *,
    levels: int | None = None,
    data_range: tuple[float, float] = (-1.0, 1.0),
    variance: str = "posterior",
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """L_0 = -log p(x_0 | x_1) at one draw x_1 ~ q(x_1 | x_0), summed over dims: (B,).

    p(x_0 | x_1) is N(mu(x_1), sigma_1^2) per dimension (sigma_1^2 = beta~_2, see
    ``variational_bound``). With ``levels`` the data are discrete: the bins of width
    w = (hi - lo) / levels tile [lo, hi] with each level at its bin's centre, x_0 must sit on
    those centres, and the decoder is the Gaussian's mass on x_0's bin, the outermost bins
    reaching to -inf and +inf (Ho et al.'s discretised decoder). Without ``levels`` it is the
    Gaussian density (continuous data). ``noise`` as in ``posterior_kl``."""
    n = schedule.num_timesteps
    ab = _table(schedule, x0)[0][0].to(x0.dtype)
    x_1 = _noised(x0, ab, generator, noise)
    mean = _model_mean(eps, x_1, 1, n, ab, torch.ones_like(ab))
    var = _model_variance(schedule, x0, variance)[0].to(x0.dtype)
    if levels is None:
        return _flat_sum(0.5 * (torch.log(2 * math.pi * var) + (x0 - mean).square() / var))
    lo, hi = (float(v) for v in data_range)
    if not hi > lo:
        raise ValueError(f"data_range must be (lo, hi) with lo < hi, got {data_range}")
    levels = check_positive_int("levels", levels, minimum=2)
    w = (hi - lo) / levels
    k = (x0 - lo) / w - 0.5
    if bool(((k - k.round()).abs() > 1e-4).any()) or bool(((k < -0.5) | (k > levels - 0.5)).any()):
        raise ValueError(
            f"x0 must sit on the centres lo + (k + 1/2) w of the {levels} levels in {data_range}"
        )
    k = k.round()
    sd = var.sqrt()
    upper = torch.where(k >= levels - 1, torch.inf, (x0 + w / 2 - mean) / sd)
    lower = torch.where(k <= 0, -torch.inf, (x0 - w / 2 - mean) / sd)
    return -_flat_sum(_log_bin_mass(lower, upper))


def variational_bound(
    eps: EpsFn,
    schedule: DiscreteSchedule,
    x0: Tensor,
    *,
    levels: int | None = None,
    data_range: tuple[float, float] = (-1.0, 1.0),
    variance: str = "posterior",
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> VLBTerms:
    """Ho et al.'s L_vlb = L_N + sum_{i=2}^{N} L_{i-1} + L_0 of data x_0 (B, ...) under the
    N-step reverse process p(x_{i-1} | x_i) = N(mu(x_i), sigma_i^2 I) of a noise predictor.

    Args:
        eps: eps(x, t) -> eps-prediction at continuous time t = i/N, a (B,) tensor (e.g.
            ``Score.eps`` of a network adapted with ``score_from_eps`` on this schedule).
        schedule: the DDPM table (``DiscreteSchedule``) the network was trained on.
        x0: data in model space; with ``levels``, on the bin centres (see ``decoder_nll``).
        levels, data_range: the discretised decoder's bins; None: continuous data.
        variance: sigma_i^2 = beta~_i ("posterior", Ho's fixedsmall) or beta_i ("beta", Ho's
            fixedlarge); for i = 1, where beta~_1 = 0, both use beta~_2 as Ho et al.'s code does.
        generator: draws one x_i ~ q(x_i | x_0) per term (independently across terms), so each
            data point's bound is an unbiased one-draw estimate; average over data points.
        noise: (N, B, ...) standard normal draws to use instead: noise[0] makes x_1 (the
            decoder's), noise[i - 1] makes x_i for L_{i-1}. The same noise for two models
            compares their bounds with common random numbers.

    Costs N - 1 + 1 = N evaluations of eps on the batch.
    """
    if x0.dim() < 1 or x0.shape[0] < 1:
        raise ValueError(f"x0 must be a (B, ...) batch, got shape {tuple(x0.shape)}")
    _model_variance(schedule, x0, variance)  # checks the variance name and table length
    n = schedule.num_timesteps
    if noise is not None and noise.shape != (n, *x0.shape):
        raise ValueError(
            f"noise must have shape (N, *x0.shape) = {(n, *x0.shape)}, got {tuple(noise.shape)}"
        )
    draws = [None] * n if noise is None else list(noise)
    kl = torch.stack(
        [
            posterior_kl(
                eps, schedule, x0, i, variance=variance, generator=generator, noise=draws[i - 1]
            )
            for i in range(2, n + 1)
        ],
        dim=1,
    )
    decoder = decoder_nll(
        eps, schedule, x0, levels=levels, data_range=data_range, variance=variance,
        generator=generator, noise=draws[0],
    )  # fmt: skip
    return VLBTerms(prior_kl(schedule, x0), kl, decoder, x0[0].numel())
