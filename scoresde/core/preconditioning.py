"""EDM's preconditioning (Karras et al. 2022, Table 1): a raw network F turned into a denoiser.

In the sigma-space of ``SDE.sigma`` (x~ = x_t / m(t) = x_0 + sigma eps, sigma = s / m),

    D(x~; sigma) = c_skip(sigma) x~ + c_out(sigma) F(c_in(sigma) x~, c_noise(sigma))
    c_skip  = sigma_d^2 / (sigma^2 + sigma_d^2)
    c_out   = sigma sigma_d / sqrt(sigma^2 + sigma_d^2)
    c_in    = 1 / sqrt(sigma^2 + sigma_d^2)
    c_noise = label_scale * ln(sigma) / 4

with sigma_d the data's standard deviation (0.5 in EDM). D estimates x_0, so the preconditioned
network is an x0-network of any Gaussian path (``EDMDenoiser``). EDM's loss weight
lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2 = 1 / c_out^2 makes the loss on F
unit-weighted: lambda |D - x_0|^2 = |F - (x_0 - c_skip x~) / c_out|^2.

``label_scale`` (1 in EDM) stretches c_noise for networks whose time embedding expects labels
on another scale: the package's U-Net has a sinusoidal embedding made for DDPM timesteps, so
its trainer passes 1000 (labels of -1700 .. 1100 over sigma in [1e-3, 80]).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from scoresde.core.checks import broadcast_time, check_finite_positive
from scoresde.core.sde import SDE

NetFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class EDMPreconditioning:
    """The four coefficients of the module doc, as functions of sigma (a tensor)."""

    sigma_data: float = 0.5
    label_scale: float = 1.0

    def __post_init__(self) -> None:
        check_finite_positive("sigma_data", self.sigma_data)
        check_finite_positive("label_scale", self.label_scale)

    def c_skip(self, sigma: Tensor) -> Tensor:
        return self.sigma_data**2 / (sigma**2 + self.sigma_data**2)

    def c_out(self, sigma: Tensor) -> Tensor:
        return sigma * self.sigma_data / torch.sqrt(sigma**2 + self.sigma_data**2)

    def c_in(self, sigma: Tensor) -> Tensor:
        return 1.0 / torch.sqrt(sigma**2 + self.sigma_data**2)

    def c_noise(self, sigma: Tensor) -> Tensor:
        return self.label_scale * 0.25 * torch.log(sigma)

    def weight(self, sigma: Tensor) -> Tensor:
        """EDM's lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2 = 1 / c_out^2."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def describe(self) -> dict[str, float]:
        return {"sigma_data": self.sigma_data, "label_scale": self.label_scale}


def _dtype_of(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class EDMDenoiser(nn.Module):
    """x0_hat(x_t, t) = m-free EDM denoiser D(x_t / m(t); sigma(t)) of a raw network F.

    Called as denoiser(x, t) with x (B, ...) and t a (B,) tensor of times on ``sde``'s clock;
    returns (B, ...) in x's dtype. Use it as an x0-network: ``Score(EDMDenoiser(F, sde),
    sde, "x0")``. F is called as F(c_in x~, c_noise) with c_noise of shape (B,).
    """

    def __init__(
        self, net: NetFn, sde: SDE, preconditioning: EDMPreconditioning | None = None
    ) -> None:
        super().__init__()
        if not callable(net):
            raise TypeError("net must be callable as net(x, label)")
        self.net = net
        self.sde = sde
        self.pre = preconditioning or EDMPreconditioning()

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        m, s = self.sde.marginal(t)
        sigma = s / m
        dtype = _dtype_of(x)
        m_b = broadcast_time(m.to(dtype), x)
        sig_b = broadcast_time(sigma.to(dtype), x)
        x_tilde = x / m_b
        out = self.net(self.pre.c_in(sig_b) * x_tilde, self.pre.c_noise(sigma.to(dtype)))
        out = out.to(x.dtype)
        return self.pre.c_skip(sig_b) * x_tilde + self.pre.c_out(sig_b) * out


def edm_sigma_range(sde: SDE, t_min: float, t_max: float) -> tuple[float, float]:
    """sigma(t_min), sigma(t_max) on ``sde`` as floats (one host read, for set-up)."""
    sig = sde.sigma(torch.tensor([t_min, t_max], dtype=torch.float64))
    lo, hi = float(sig[0]), float(sig[1])
    if not (math.isfinite(lo) and lo > 0):
        raise ValueError(f"t_min: sigma({t_min}) = {lo} must be finite and > 0")
    return lo, hi
