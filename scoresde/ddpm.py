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
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde.checks import broadcast_time


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
