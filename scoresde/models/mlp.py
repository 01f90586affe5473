"""The package's small network for vector data (D,): the trainer's default when a sample is
one-dimensional.

net(x, label) = W_out h_L, h_0 = W_in x, h_(k+1) = h_k + MLP_k(h_k + E(label)): residual SiLU
blocks of ``width`` units, the label entering every block through the sinusoidal embedding of
``scoresde.models.unet`` and a two-layer MLP.
"""

from __future__ import annotations

from torch import Tensor, nn

from scoresde.models.unet import timestep_embedding


class SmallMLP(nn.Module):
    """net(x, label): x (B, D), label (B,) float (DDPM-scale); returns (B, D)."""

    def __init__(self, dim: int, width: int = 128, depth: int = 3, embed_dim: int = 64) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(embed_dim, width), nn.SiLU(), nn.Linear(width, width)
        )
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
            for _ in range(depth)
        )
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x: Tensor, label: Tensor) -> Tensor:
        dtype = self.inp.weight.dtype
        emb = self.time_mlp(timestep_embedding(label, self.embed_dim).to(dtype))
        h = self.inp(x.to(dtype))
        for block in self.blocks:
            h = h + block(h + emb)
        return self.out(h).to(x.dtype)
