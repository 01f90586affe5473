"""A per-sample Brownian path that is sampled lazily and remembers every value it has drawn.

Adaptive SDE solvers reject steps. Retrying a rejected step with a fresh normal draw biases
the result: the accept test looks at the noise, so accepted steps are selected toward small
increments. Rejection sampling with memory (Rackauckas & Nie 2017, "Adaptive methods for
stochastic differential equations via natural embeddings and rejection sampling with
memory", Discrete Contin. Dyn. Syst. B 22(7)) keeps every drawn value of W and draws new
ones conditionally on them, so the path is one Brownian path whatever the solver accepts.

Here each sample keeps the points of its path that lie ahead of its current position, sorted.
A query at s (ahead of the current position s0) draws, with z ~ N(0, I):

    between known points (a, Wa) < s < (b, Wb):
        W(s) = Wa + (s - a)/(b - a) (Wb - Wa) + sqrt((s - a)(b - s)/(b - a)) z   (Brownian bridge)
    beyond the last known point (a, Wa):
        W(s) = Wa + sqrt(s - a) z                                           (fresh increment)
    at a known point: its stored value.

and stores the new point. ``advance(accepted)`` moves the accepted samples to their last
queried point and forgets the points behind it. By the Markov property of W the bridge
between the two neighbours is the exact conditional law given everything drawn, so no
selection bias can enter. Time runs in whatever direction the caller uses as s (the reverse
SDE solver uses s = -t); all shapes are (B, ...) with per-sample s of shape (B,).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _gather(values: Tensor, index: Tensor) -> Tensor:
    """values[b, index[b, k], ...] for values (B, K, ...) and index (B, J)."""
    shaped = index.reshape(index.shape + (1,) * (values.dim() - 2)).expand(
        index.shape + values.shape[2:]
    )
    return values.gather(1, shaped)


class BrownianMemory:
    """Lazily sampled Brownian paths, one per sample, with bridge refinement.

    Args:
        start: (B,) position s0 of every sample (W(s0) = 0).
        like: a (B, ...) tensor giving the shape, dtype and device of W.
        draw: returns a fresh N(0, I) tensor shaped like ``like`` (used at once).
        capacity: initial number of remembered points per sample; grows on demand
            through ``reserve``.
    """

    def __init__(
        self, start: Tensor, like: Tensor, draw: Callable[[], Tensor], capacity: int = 4
    ) -> None:
        self.draw = draw
        b = like.shape[0]
        self.s = start.clone()
        self.w = torch.zeros_like(like)
        self.points = torch.full((b, capacity), torch.inf, dtype=start.dtype, device=start.device)
        self.values = torch.zeros((b, capacity, *like.shape[1:]), dtype=like.dtype,
                                  device=like.device)  # fmt: skip
        self.count = torch.zeros(b, dtype=torch.long, device=start.device)
        self._slots = torch.arange(capacity, device=start.device)
        self._query: tuple[Tensor, Tensor] | None = None

    @property
    def capacity(self) -> int:
        return self.points.shape[1]

    def reserve(self, most: int) -> None:
        """Make room for one more point when some sample already holds ``most`` points.

        ``most`` is ``count.max()`` read on the host by the caller (together with its own
        per-iteration read, so the memory adds no synchronisation of its own).
        """
        if most < self.capacity:
            return
        extra = self.capacity
        pad = torch.full_like(self.points[:, :extra], torch.inf)
        self.points = torch.cat([self.points, pad], dim=1)
        self.values = torch.cat([self.values, torch.zeros_like(self.values[:, :extra])], dim=1)
        self._slots = torch.arange(self.capacity, device=self.points.device)

    def query(self, s: Tensor) -> Tensor:
        """W(s) for per-sample s (B,) ahead of the current position; remembered afterwards.

        A sample whose s equals its current position gets its current W and stores nothing.
        """
        pos = (self.points < s[:, None]).sum(1)  # known points strictly before s
        before = (pos - 1).clamp_min(0)[:, None]
        after = pos.clamp_max(self.capacity - 1)[:, None]
        first = pos == 0
        a = torch.where(first, self.s, self.points.gather(1, before)[:, 0])
        wa = torch.where(_expand(first, self.w), self.w, _gather(self.values, before)[:, 0])
        bounded = pos < self.count
        b = torch.where(bounded, self.points.gather(1, after)[:, 0], s + 1)
        wb = _gather(self.values, after)[:, 0]
        known = bounded & (b == s)
        span = b - a
        frac = torch.where(bounded, (s - a) / span, torch.zeros_like(s))
        var = torch.where(bounded, (s - a) * (b - s) / span, s - a)
        w = wa + _expand(frac, wa) * (wb - wa) + _expand(var.clamp_min(0).sqrt(), wa) * self.draw()
        w = torch.where(_expand(known, w), wb, w)
        here_now = s <= self.s  # a finished sample queries its own position: W stays
        w = torch.where(_expand(here_now, w), self.w, w)
        # insert s at slot pos (slots after it shift right by one) unless it is already known
        insert = ~(known | here_now)
        slots = self._slots[None, :]
        src = torch.where(insert[:, None] & (slots > pos[:, None]), slots - 1, slots)
        here = insert[:, None] & (slots == pos[:, None])
        self.points = torch.where(here, s[:, None], self.points.gather(1, src))
        self.values = torch.where(_expand(here, self.values), w[:, None], _gather(self.values, src))
        self.count = self.count + insert
        self._query = (s, w)
        return w

    def advance(self, accepted: Tensor) -> None:
        """Move the ``accepted`` samples (B,) bool to their last query; forget what is behind."""
        assert self._query is not None, "advance() before query()"
        s, w = self._query
        self.s = torch.where(accepted, s, self.s)
        self.w = torch.where(_expand(accepted, w), w, self.w)
        behind = (self.points <= s[:, None]).sum(1)
        drop = torch.where(accepted, behind, torch.zeros_like(behind))
        src = self._slots[None, :] + drop[:, None]
        gone = src >= self.capacity
        src = src.clamp_max(self.capacity - 1)
        self.points = torch.where(gone, torch.inf, self.points.gather(1, src))
        self.values = torch.where(_expand(gone, self.values), 0.0, _gather(self.values, src))
        self.count = self.count - drop


def _expand(per_sample: Tensor, like: Tensor) -> Tensor:
    """(B,) or (B, K) -> broadcastable against ``like`` (B, ...) or (B, K, ...)."""
    return per_sample.reshape(per_sample.shape + (1,) * (like.dim() - per_sample.dim()))
