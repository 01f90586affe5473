"""The denoising loss of every parameterisation, weighting and time proposal, on every path.

With x_t = m(t) x_0 + s(t) eps (``SDE.marginal``; m' and s' from ``marginal_rate``), the network
predicts one affine function of (x_0, eps); its target, and the factor c(t) by which its squared
error becomes the x_0 error at the same (x_t, t) (|x0_hat - x_0|^2 = c |net - target|^2):

    eps     eps                              c = s^2 / m^2
    x0      x_0                              c = 1
    v       m eps - s x_0                    c = s^2 / (m^2 + s^2)^2
    flow    m' x_0 + s' eps                  c = s^2 / (m s' - s m')^2
    score   grad log p(x_t | x_0) = -eps / s c = s^4 / m^2
    edm     (x_0 - c_skip x~) / c_out        c = c_out^2   (x~ = x_t / m)

(flow is eps - x_0 on rectified flow; edm is EDM's raw network F.) The per-sample loss is

    loss_i = r_i * w(t_i) * mean over the non-batch dims of (net - target)^2,

w the weighting's factor on the network's own MSE (``scoresde.training.weightings``: its
x_0 weight times c, or 1 for ``simple``) and r the time proposal's factor
(``scoresde.training.time_samplers``). Equivalent combinations give the same numbers:
eps with ``simple`` is eps with ``sigma2`` (score_sde's lambda = s^2 DSM, |s s_hat + eps|^2),
edm with ``edm`` is F's unweighted MSE, and likelihood weighting under importance sampling
estimates the same objective as under uniform t with a smaller variance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from scoresde.core.adapters import TimeLabelFn, continuous_time
from scoresde.core.checks import broadcast_time, check_generator
from scoresde.core.preconditioning import EDMPreconditioning
from scoresde.core.sde import SDE
from scoresde.training.time_samplers import TimeSampler, time_sampler_from
from scoresde.training.weightings import Weighting, weighting_from

TRAIN_PREDICTIONS = ("eps", "x0", "v", "flow", "score", "edm")
_TINY = 1e-30  # m below this is m = 0 (zero terminal SNR) in the weights' limits


def prediction_factor(prediction: str, sde: SDE, t: Tensor,
                      pre: EDMPreconditioning | None = None) -> Tensor:  # fmt: skip
    """c(t) of the module doc, float64 (B,): the x_0 error per unit squared error of the
    ``prediction``'s own output."""
    m, s = sde.marginal(t)
    m = m.clamp_min(_TINY)
    if prediction == "eps":
        return (s / m) ** 2
    if prediction == "x0":
        return torch.ones_like(t)
    if prediction == "v":
        return s**2 / (m**2 + s**2) ** 2
    if prediction == "flow":
        dm, ds = sde.marginal_rate(t)
        return s**2 / (m * ds - s * dm) ** 2
    if prediction == "score":
        return s**4 / m**2
    if prediction == "edm":
        return (pre or EDMPreconditioning()).c_out(s / m) ** 2
    raise ValueError(
        f"prediction must be one of {', '.join(TRAIN_PREDICTIONS)}, got {prediction!r}"
    )


def denoising_loss(
    net: Callable[..., Tensor],
    sde: SDE,
    x0: Tensor,
    *,
    prediction: str = "eps",
    weighting: str | Weighting | Callable[[Tensor], Tensor] = "simple",
    t_sampler: str | TimeSampler | Callable[..., Tensor] = "uniform",
    generator: torch.Generator | None = None,
    time_label: TimeLabelFn | None = None,
    preconditioning: EDMPreconditioning | None = None,
    condition: dict[str, Any] | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """Per-sample denoising loss (B,) of ``net`` on clean data ``x0`` (B, ...) (module doc).

    Draws t from ``t_sampler`` and eps ~ N(0, I) from ``generator`` (in that order), forms
    x_t = m(t) x_0 + s(t) eps and calls net(x_t, time_label(t), **condition); for ``edm`` it
    calls F(c_in x~, c_noise(sigma)) instead (``scoresde.core.preconditioning``). Times are on
    the sde's clock, in [0, T].

    Args:
        net: the network, net(x, label) -> tensor of x's shape.
        sde: the forward process (VP, sub-VP, VE or any ``GaussianPath``).
        x0: a batch of data, (B, ...) floating.
        prediction: what the network outputs: eps, x0, v, flow (velocity m' x_0 + s' eps),
            score, or edm (EDM's preconditioned F).
        weighting: simple, sigma2, likelihood, min_snr, edm, a ``Weighting`` or w(t).
        t_sampler: uniform, discrete, importance, lognormal, logit_normal, a
            ``TimeSampler`` or f(batch, generator, device).
        generator: the source of every random draw (t, then eps).
        time_label: t -> the network's time input (default: t itself); unused for edm.
        preconditioning: EDM's coefficients (default sigma_d = 0.5, label_scale 1).
        condition: keyword arguments for the network (per-sample tensors have B rows).
        t, noise: the times (B,) and the standard normal noise (x0's shape) drawn beforehand,
            e.g. for a whole global batch of which this call takes a share; r(t) then comes
            from ``t_sampler.correction``.
    """
    if prediction not in TRAIN_PREDICTIONS:
        raise ValueError(
            f"prediction must be one of {', '.join(TRAIN_PREDICTIONS)}, got {prediction!r}"
        )
    if not isinstance(x0, Tensor) or not x0.is_floating_point() or x0.dim() < 1:
        raise ValueError("x0 must be a floating tensor of shape (B, ...)")
    generator = check_generator("generator", generator)
    weight = weighting_from(weighting)
    sampler = time_sampler_from(t_sampler)
    pre = preconditioning or EDMPreconditioning()
    label_of = time_label or continuous_time()
    batch, device, dtype = x0.shape[0], x0.device, x0.dtype

    if t is None:
        t, r = sampler.draw(sde, batch, generator, device)
    else:
        t = t.to(device=device, dtype=torch.float64)
        if t.shape != (batch,):
            raise ValueError(f"t must have shape ({batch},), got {tuple(t.shape)}")
        r = sampler.correction(sde, t)
    if noise is None:
        eps = torch.randn(x0.shape, generator=generator, device=device, dtype=dtype)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise must have x0's shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
    else:
        eps = noise.to(dtype)
    m, s = sde.marginal(t)
    m_b, s_b = broadcast_time(m.to(dtype), x0), broadcast_time(s.to(dtype), x0)
    x_t = m_b * x0 + s_b * eps
    kwargs = condition or {}

    if prediction == "edm":
        sigma = (s / m).to(dtype)
        sig_b = broadcast_time(sigma, x0)
        x_tilde = x_t / m_b
        out = net(pre.c_in(sig_b) * x_tilde, pre.c_noise(sigma), **kwargs)
        target = (x0 - pre.c_skip(sig_b) * x_tilde) / pre.c_out(sig_b)
    else:
        out = net(x_t, label_of(t.to(dtype)), **kwargs)
        if prediction == "eps":
            target = eps
        elif prediction == "x0":
            target = x0
        elif prediction == "v":
            target = m_b * eps - s_b * x0
        elif prediction == "flow":
            dm, ds = sde.marginal_rate(t)
            target = broadcast_time(dm.to(dtype), x0) * x0 + broadcast_time(ds.to(dtype), x0) * eps
        else:
            target = -eps / s_b
    if out.shape != x0.shape:
        raise ValueError(f"net returned shape {tuple(out.shape)}, expected {tuple(x0.shape)}")
    mse = (out.to(dtype) - target).pow(2).reshape(batch, -1).mean(dim=1)

    g2 = sde.diffusion(t) ** 2 if weight.needs_diffusion else torch.zeros_like(t)
    c = prediction_factor(prediction, sde, t, pre)
    factor = weight.factor(t, m.clamp_min(_TINY), s, g2, c) * r
    return factor.to(dtype) * mse
