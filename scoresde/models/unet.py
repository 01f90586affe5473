"""The package's small U-Net for image data (C, H, W) with H and W divisible by 4: the network
of the built-in model and the trainer's default for images.

Three resolutions, H x W (width c), H/2 x W/2 and H/4 x W/4 (width 2c), one residual block
per level on the way down and on the way up, skip connections by concatenation, average-pool
down and nearest up. The time label (the DDPM timestep i = N t as a float, so continuous-time
solvers can ask between timesteps) enters through a sinusoidal embedding and an MLP added
inside every block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(label: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """[sin(label f_k), cos(label f_k)] with f_k = max_period^(-k / (dim/2)), k < dim/2."""
    half = dim // 2
    k = torch.arange(half, device=label.device, dtype=torch.float32)
    angle = label.float()[:, None] * torch.exp(-math.log(max_period) * k / half)[None]
    return torch.cat([angle.sin(), angle.cos()], dim=1)


class ResidualBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv, + time embedding, GroupNorm, SiLU, 3x3 conv, + skip."""

    def __init__(self, c_in: int, c_out: int, embed_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(4, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.embed = nn.Linear(embed_dim, c_out)
        self.norm2 = nn.GroupNorm(4, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.embed(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class SmallUNet(nn.Module):
    """net(x, label): x (B, C, H, W), label (B,) float (a DDPM-scale timestep: the sinusoidal
    embedding resolves labels from about 1 to 10^4); returns (B, C, H, W)."""

    def __init__(self, width: int = 16, embed_dim: int = 64, channels: int = 1) -> None:
        super().__init__()
        c = width
        self.embed_dim = embed_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(embed_dim, 2 * embed_dim), nn.SiLU(), nn.Linear(2 * embed_dim, embed_dim)
        )
        self.inp = nn.Conv2d(channels, c, 3, padding=1)
        self.down8 = ResidualBlock(c, c, embed_dim)
        self.down4 = ResidualBlock(c, 2 * c, embed_dim)
        self.mid2 = ResidualBlock(2 * c, 2 * c, embed_dim)
        self.up4 = ResidualBlock(4 * c, 2 * c, embed_dim)
        self.up8 = ResidualBlock(3 * c, c, embed_dim)
        self.out = nn.Sequential(
            nn.GroupNorm(4, c), nn.SiLU(), nn.Conv2d(c, channels, 3, padding=1)
        )

    def forward(self, x: Tensor, label: Tensor) -> Tensor:
        """The output for x of any floating dtype: computed in the weights' dtype, returned in
        x's."""
        dtype = self.inp.weight.dtype
        emb = self.time_mlp(timestep_embedding(label, self.embed_dim).to(dtype))
        h8 = self.down8(self.inp(x.to(dtype)), emb)
        h4 = self.down4(F.avg_pool2d(h8, 2), emb)
        m = self.mid2(F.avg_pool2d(h4, 2), emb)
        u = self.up4(torch.cat([F.interpolate(m, scale_factor=2.0), h4], dim=1), emb)
        u = self.up8(torch.cat([F.interpolate(u, scale_factor=2.0), h8], dim=1), emb)
        return self.out(u).to(x.dtype)
