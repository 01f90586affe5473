"""Counter-based noise keyed by (seed, sample index, draw number): batch-independent samples.

Sample i's k-th noise draw is a pure function of (seed, i, k) and the element position, so a
sample is the same whatever batch it shares, in whatever order, on however many processes.
Each standard normal comes from two 32-bit uniforms (the halves of one 64-bit word) via
Box–Muller; the word is the SplitMix64 finaliser (Steele, Lea & Flood 2014) of a counter

    key(i, k) = mix(mix(seed) + i * G) + k * G2,   word(e) = mix(key + e)

computed with wrapping int64 tensor arithmetic on the sample's device (no host round trip,
no per-sample generator objects, so it stays fast for small samples and large batches).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_MASK64 = (1 << 64) - 1


def _signed(v: int) -> int:
    v &= _MASK64
    return v - (1 << 64) if v >= 1 << 63 else v


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)
_DRAW = _signed(0xD1B54A32D192ED03)


def _shr(x: Tensor, n: int) -> Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> n) & ((1 << (64 - n)) - 1)


def mix64(x: Tensor) -> Tensor:
    """SplitMix64's finaliser on an int64 tensor (wrapping arithmetic)."""
    x = x + _GOLDEN
    x = (x ^ _shr(x, 30)) * _M1
    x = (x ^ _shr(x, 27)) * _M2
    return x ^ _shr(x, 31)


def _mix_int(v: int) -> int:
    """The same finaliser on a Python int (for keys computed once on the host)."""
    v = (v + 0x9E3779B97F4A7C15) & _MASK64
    v = ((v ^ (v >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    v = ((v ^ (v >> 27)) * 0x94D049BB133111EB) & _MASK64
    return _signed(v ^ (v >> 31))


def _uniforms(bits: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The high and low 32 bits of each word as two uniforms in (0, 1)."""
    work = torch.float64 if dtype == torch.float64 else torch.float32
    scale = 1.0 / (1 << 32)
    hi = (_shr(bits, 32).to(work) + 0.5) * scale
    lo = ((bits & 0xFFFFFFFF).to(work) + 0.5) * scale
    return hi, lo


class IndexedNoise:
    """A ``NoiseSource`` whose draws depend only on (seed, sample index, draw number).

    ``indices`` (B,) are the global sample indices of the batch rows; ``like`` gives the
    shape, device and dtype. The prior draw is ``prior()`` (draw number 0); every solver noise
    draw (``__call__`` or ``normal``) takes the next number, so two runs that make the same
    sequence of draws give every sample the same noise.
    """

    def __init__(self, like: Tensor, indices: Tensor, seed: int) -> None:
        if indices.shape != (like.shape[0],):
            raise ValueError(
                f"indices must have shape (B,) = ({like.shape[0]},), got {tuple(indices.shape)}"
            )
        self.shape, self.dtype = like.shape, like.dtype
        self.draws = 0
        base = _mix_int(int(seed))
        idx = indices.to(device=like.device, dtype=torch.int64)
        self._keys = mix64(idx * _GOLDEN + base)  # (B,)
        d = like[0].numel()
        self._elem = torch.arange(d, device=like.device, dtype=torch.int64)  # (D,)

    def _draw(self) -> Tensor:
        k = self.draws
        self.draws += 1
        key = self._keys + _signed(k * _DRAW)  # (B,)
        ctr = key[:, None] + self._elem[None, :]  # (B, D)
        u1, u2 = _uniforms(mix64(ctr), self.dtype)
        z = torch.log(u1).mul_(-2.0).sqrt_().mul_(torch.cos(u2.mul_(2 * math.pi)))
        return z.to(self.dtype).reshape(self.shape)

    def prior(self, std: float = 1.0) -> Tensor:
        """The start x_T = std * z from draw number 0 (call before any solver draw)."""
        if self.draws != 0:
            raise RuntimeError("prior() must be the first draw")
        return self._draw().mul_(std)

    def __call__(self, t: float, t_next: float) -> Tensor:
        return self._draw()

    def normal(self) -> Tensor:
        return self._draw()
