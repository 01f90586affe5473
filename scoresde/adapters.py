"""Turn a network's prediction into a score, and back.

With x_t = m(t) x_0 + s(t) eps (see ``SDE.marginal``), Tweedie's formula gives the exact
relations between the three usual network targets and the score of p_t:

    score(x, t) = -eps(x, t) / s(t)
    score(x, t) = (m(t) x0_hat(x, t) - x) / s(t)^2
    x0_hat      = (x + s(t)^2 score) / m(t)                       (Tweedie's denoiser)
    v           = m(t) eps - s(t) x_0   (VP only, m^2 + s^2 = 1;  eps = s x + m v)

Time labels. A network trained on integer DDPM timesteps expects a label, not t. The mapping
is always explicit and passed as ``time_label``:

    continuous_time()      the network takes t itself (default)
    scaled_time(999)       label = 999 t, score_sde's convention for DDPM-trained VP models
    discrete_index(N)      label = round(N t) - 1 clamped to [0, N - 1] (int64): the timestep
                           of a ``DiscreteSchedule`` grid point i/N is i - 1, as in diffusers

Near t = 0 the std s(t) goes to 0. Sampling grids never evaluate there (they stop at eps > 0),
and the adapters clamp s(t) below at ``min_std`` (default 1e-5, reached only for t < 1e-9 on
the linear VP schedule) so a call at t = 0 returns a large finite value, never Inf.

Precision policy: the network may run in float16/bfloat16; its output is cast to x's dtype
before any arithmetic, so solver state stays in x's dtype (float32 typically).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scoresde.checks import broadcast_time, check_output, check_positive_int
from scoresde.sde import SDE, VPSDE, SubVPSDE

NetFn = Callable[[Tensor, Tensor], Tensor]
TimeLabelFn = Callable[[Tensor], Tensor]

DEFAULT_MIN_STD = 1e-5


def continuous_time() -> TimeLabelFn:
    """The network's time input is t in [0, 1] itself."""
    return _identity


def _identity(t: Tensor) -> Tensor:
    return t


def scaled_time(factor: float) -> TimeLabelFn:
    """label = factor * t (e.g. 999 for score_sde's DDPM-trained VP models, N - 1 in general)."""
    factor = float(factor)

    def label(t: Tensor) -> Tensor:
        return t * factor

    return label


def discrete_index(num_timesteps: int) -> TimeLabelFn:
    """label = round(N t) - 1, clamped to [0, N - 1], as int64: the 0-based DDPM timestep."""
    n = check_positive_int("num_timesteps", num_timesteps)

    def label(t: Tensor) -> Tensor:
        return torch.clamp(torch.round(t * n).long() - 1, 0, n - 1)

    return label


class Score:
    """A score function s(x, t) built from a network, remembering what the network predicts.

    Call it as ``score(x, t)`` with x (B, ...) and t a (B,) tensor. ``eps(x, t)`` and
    ``x0(x, t)`` give the other parameterisations (computed exactly from the same evaluation).
    """

    def __init__(
        self,
        net: NetFn,
        sde: SDE,
        prediction: str,
        time_label: TimeLabelFn | None = None,
        min_std: float = DEFAULT_MIN_STD,
    ) -> None:
        if not callable(net):
            raise TypeError("the network must be callable as net(x, label)")
        if prediction not in ("eps", "x0", "v", "score"):
            raise ValueError(f"prediction must be one of eps, x0, v, score; got {prediction!r}")
        if prediction == "v" and (not isinstance(sde, VPSDE) or isinstance(sde, SubVPSDE)):
            raise TypeError("v-prediction is defined for the VP SDE only (m^2 + s^2 = 1)")
        self.net, self.sde, self.prediction = net, sde, prediction
        self.time_label = time_label if time_label is not None else continuous_time()
        self.min_std = float(min_std)

    def _net(self, x: Tensor, t: Tensor) -> Tensor:
        out = self.net(x, self.time_label(t))
        if hasattr(out, "sample") and not isinstance(out, Tensor):  # diffusers' output object
            out = out.sample
        return check_output(out, x, "network")

    def _coefs(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        m, s = self.sde._marginal(t)
        return broadcast_time(m, x), broadcast_time(s.clamp_min(self.min_std), x)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        out = self._net(x, t)
        if self.prediction == "score":
            return out
        m, s = self._coefs(x, t)
        if self.prediction == "eps":
            return out / s.neg()
        if self.prediction == "x0":
            return (m * out - x) / (s * s)
        return -(s * x + m * out) / s  # v: eps = s x + m v

    def eps(self, x: Tensor, t: Tensor) -> Tensor:
        """eps_hat(x, t) = -s(t) score(x, t)."""
        if self.prediction == "eps":
            return self._net(x, t)
        return eps_from_score(self, self.sde, self.min_std)(x, t)

    def x0(self, x: Tensor, t: Tensor) -> Tensor:
        """Tweedie's denoiser x0_hat = (x + s^2 score) / m."""
        if self.prediction == "x0":
            return self._net(x, t)
        return x0_from_score(self, self.sde, self.min_std)(x, t)


def score_from_eps(
    eps_fn: NetFn, sde: SDE, time_label: TimeLabelFn | None = None, min_std: float = DEFAULT_MIN_STD
) -> Score:
    """score(x, t) = -eps_fn(x, label(t)) / s(t)."""
    return Score(eps_fn, sde, "eps", time_label, min_std)


def score_from_x0(
    x0_fn: NetFn, sde: SDE, time_label: TimeLabelFn | None = None, min_std: float = DEFAULT_MIN_STD
) -> Score:
    """score(x, t) = (m(t) x0_fn(x, label(t)) - x) / s(t)^2."""
    return Score(x0_fn, sde, "x0", time_label, min_std)


def score_from_v(
    v_fn: NetFn, sde: VPSDE, time_label: TimeLabelFn | None = None, min_std: float = DEFAULT_MIN_STD
) -> Score:
    """score(x, t) = -(s x + m v_fn(x, label(t))) / s  (VP: eps = s x + m v)."""
    return Score(v_fn, sde, "v", time_label, min_std)


def eps_from_score(
    score: Callable[[Tensor, Tensor], Tensor], sde: SDE, min_std: float = DEFAULT_MIN_STD
) -> NetFn:
    """eps(x, t) = -s(t) score(x, t)."""

    def eps(x: Tensor, t: Tensor) -> Tensor:
        s = broadcast_time(sde._marginal(t)[1].clamp_min(min_std), x)
        return -s * score(x, t)

    return eps


def x0_from_score(
    score: Callable[[Tensor, Tensor], Tensor], sde: SDE, min_std: float = DEFAULT_MIN_STD
) -> NetFn:
    """Tweedie: x0_hat(x, t) = (x + s(t)^2 score(x, t)) / m(t)."""

    def x0(x: Tensor, t: Tensor) -> Tensor:
        m, s = sde._marginal(t)
        s = broadcast_time(s.clamp_min(min_std), x)
        return (x + s * s * score(x, t)) / broadcast_time(m, x)

    return x0
