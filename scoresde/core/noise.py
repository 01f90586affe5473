"""Noise sources for stochastic solvers, behind one callable.

A noise source is called as ``noise(t, t_next)`` with two Python floats (t > t_next) and
returns a standard normal tensor z of the sample shape: the Brownian increment over the step
divided by sqrt(t - t_next). ``noise.normal()`` returns a fresh standard normal draw that is
not tied to a time interval (Langevin correctors use it).

``GaussianNoise`` draws independent normals from the caller's ``torch.Generator`` into one
reused buffer: the returned tensor is overwritten by the next call, so use it at once.
``BrownianNoise`` reads increments of one Brownian path (torchsde's ``BrownianInterval``
with a halfway tree, seeded from the caller's generator), so a seed gives the same path at
50 steps and at 1000 and the two runs converge pathwise. The library never draws from
torch's global RNG.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torchsde
from torch import Tensor


class NoiseSource(Protocol):
    def __call__(self, t: float, t_next: float) -> Tensor: ...

    def normal(self) -> Tensor: ...


def seed_from(generator: torch.Generator) -> int:
    """A 63-bit integer drawn from ``generator`` (one host read, at set-up time)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())


class GaussianNoise:
    """Independent N(0, I) draws from ``generator`` into a reused buffer shaped like ``like``."""

    def __init__(self, like: Tensor, generator: torch.Generator) -> None:
        self.generator = generator
        self._buf = torch.empty(like.shape, dtype=like.dtype, device=like.device)  # contiguous

    def __call__(self, t: float, t_next: float) -> Tensor:
        return torch.randn(self._buf.shape, generator=self.generator, out=self._buf)

    def normal(self) -> Tensor:
        return torch.randn(self._buf.shape, generator=self.generator, out=self._buf)


class BrownianNoise:
    """Normalised increments of one Brownian path W on reverse time s = T - t.

    ``bm`` is a ``torchsde.BrownianInterval`` over s in [0, T] with a halfway tree; its
    entropy is drawn once from ``generator`` (or given), so the same seed gives the same path.
    ``levy_area`` is torchsde's Lévy-area approximation ("none"; "space-time" for SRK).
    """

    def __init__(
        self,
        like: Tensor,
        generator: torch.Generator,
        T: float = 1.0,
        tol: float = 1e-5,
        entropy: int | None = None,
        levy_area: str = "none",
    ) -> None:
        self.shape, self.T = like.shape, float(T)
        self.entropy = seed_from(generator) if entropy is None else int(entropy)
        self.bm = torchsde.BrownianInterval(
            t0=0.0,
            t1=self.T,
            size=(like.shape[0], like[0].numel()),
            dtype=like.dtype,
            device=like.device,
            entropy=self.entropy,
            tol=tol,
            levy_area_approximation=levy_area,
            halfway_tree=True,
        )
        self._normal = GaussianNoise(like, generator)

    def increment(self, t: float, t_next: float) -> Tensor:
        """W(T - t_next) - W(T - t), flattened to (B, D)."""
        return self.bm(self.T - t, self.T - t_next)

    def __call__(self, t: float, t_next: float) -> Tensor:
        return (self.increment(t, t_next) / math.sqrt(t - t_next)).reshape(self.shape)

    def normal(self) -> Tensor:
        return self._normal.normal()


NOISE_KINDS = ("gaussian", "brownian")


def make_noise(kind: str, like: Tensor, generator: torch.Generator, T: float = 1.0) -> NoiseSource:
    if kind == "gaussian":
        return GaussianNoise(like, generator)
    if kind == "brownian":
        return BrownianNoise(like, generator, T)
    raise ValueError(f"unknown noise {kind!r}; known: {', '.join(NOISE_KINDS)} or a NoiseSource")
