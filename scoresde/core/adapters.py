"""Turn a network's prediction into a score, and back.

With x_t = m(t) x_0 + s(t) eps (see ``SDE.marginal``), Tweedie's formula gives the exact
relations between the three usual network targets and the score of p_t:

    score(x, t) = -eps(x, t) / s(t)
    score(x, t) = (m(t) x0_hat(x, t) - x) / s(t)^2
    x0_hat      = (x + s(t)^2 score) / m(t)                       (Tweedie's denoiser)
    v      = m eps - s x_0:    x_0 = (m x - s v) / n,    eps = (s x + m v) / n,  n = m^2 + s^2
    flow u = m' x_0 + s' eps:  x_0 = (s' x - s u) / D,  eps = (m u - m' x) / D,  D = m s' - s m'

(v and u invert the 2x2 system [x; pred] = A [x_0; eps]; on VP m^2 + s^2 = 1 and v is the usual
v-prediction; on the rectified-flow path m = 1 - t, s = t, u = eps - x_0 is the flow-matching
velocity and D = 1.) Every prediction works on every path. Where m(t) = 0 (zero terminal SNR) an
eps or score network cannot give x_0; x0, v and flow networks can.

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

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from scoresde.core.checks import broadcast_time, check_output, check_positive_int
from scoresde.core.sde import SDE

NetFn = Callable[[Tensor, Tensor], Tensor]
TimeLabelFn = Callable[[Tensor], Tensor]

DEFAULT_MIN_STD = 1e-5
PREDICTIONS = ("eps", "x0", "v", "flow", "score")


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

    The network is called as ``net(x, label, **condition)``. ``with_condition(**kw)`` returns a
    copy that passes per-call keyword arguments (class labels, ``encoder_hidden_states``, ...):
    a tensor with a leading dimension is per sample (B, ...); anything else is passed as is.
    ``with_x0_correction(fn)`` returns a copy whose x0 prediction is replaced by fn(x0_hat)
    (clipping, dynamic thresholding: ``scoresde.core.x0_correction``), and whose score, eps and x0
    all follow from the corrected x0: score = (m fn(x0_hat) - x) / s^2.
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
        if prediction not in PREDICTIONS:
            raise ValueError(
                f"prediction must be one of {', '.join(PREDICTIONS)}; got {prediction!r}"
            )
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be an SDE, got {type(sde).__name__}")
        self.net, self.sde, self.prediction = net, sde, prediction
        self.time_label = time_label if time_label is not None else continuous_time()
        self.min_std = float(min_std)
        self.condition: dict[str, Any] = {}
        self.x0_correction: Callable[[Tensor], Tensor] | None = None

    # -- derived copies ---------------------------------------------------------------------------
    def with_condition(self, **condition: Any) -> Score:
        """A copy whose network calls receive ``condition`` as keyword arguments."""
        out = copy.copy(self)
        out.condition = dict(condition)
        return out

    def with_x0_correction(self, fn: Callable[[Tensor], Tensor] | None) -> Score:
        """A copy whose x0 prediction is fn(x0_hat) (None removes a correction)."""
        if fn is not None and not callable(fn):
            raise TypeError("the x0 correction must be callable as fn(x0_hat) -> x0")
        out = copy.copy(self)
        out.x0_correction = fn
        return out

    def rows(self, index: Tensor) -> Score:
        """This score for the batch rows ``index`` only (per-sample conditions selected too);
        for solvers that evaluate part of the batch."""
        if not self.condition:
            return self
        out = copy.copy(self)
        out.condition = {k: _select_rows(v, index) for k, v in self.condition.items()}
        return out

    # -- evaluation -------------------------------------------------------------------------
    def _call_net(self, x: Tensor, label: Tensor, condition: dict[str, Any]) -> Tensor:
        out = self.net(x, label, **condition)
        if hasattr(out, "sample") and not isinstance(out, Tensor):  # diffusers' output object
            out = out.sample
        return check_output(out, x, "network")

    def _net(self, x: Tensor, t: Tensor) -> Tensor:
        return self._call_net(x, self.time_label(t), self.condition)

    def _coefs(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        m, s = self.sde.marginal(t)
        return broadcast_time(m, x), broadcast_time(s.clamp_min(self.min_std), x)

    def _rates(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        dm, ds = self.sde.marginal_rate(t)
        return broadcast_time(dm, x), broadcast_time(ds, x)

    def _x0_of(self, out: Tensor, x: Tensor, t: Tensor, m: Tensor, s: Tensor) -> Tensor:
        """x0_hat from the raw network output ``out`` (module doc)."""
        if self.prediction == "x0":
            return out
        if self.prediction == "eps":
            return (x - s * out) / m
        if self.prediction == "v":
            return (m * x - s * out) / (m * m + s * s)
        if self.prediction == "flow":
            dm, ds = self._rates(x, t)
            return (ds * x - s * out) / (m * ds - s * dm)
        return (x + s * s * out) / m

    def _eps_of(self, out: Tensor, x: Tensor, t: Tensor, m: Tensor, s: Tensor) -> Tensor:
        """eps_hat from the raw output of a v or flow network (module doc)."""
        if self.prediction == "v":
            return (s * x + m * out) / (m * m + s * s)
        dm, ds = self._rates(x, t)
        return (m * out - dm * x) / (m * ds - s * dm)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        out = self._net(x, t)
        if self.prediction == "score" and self.x0_correction is None:
            return out
        m, s = self._coefs(x, t)
        if self.x0_correction is not None:
            x0 = self.x0_correction(self._x0_of(out, x, t, m, s))
            return (m * x0 - x) / (s * s)
        if self.prediction == "eps":
            return out / s.neg()
        if self.prediction == "x0":
            return (m * out - x) / (s * s)
        return self._eps_of(out, x, t, m, s) / s.neg()  # v, flow

    def eps(self, x: Tensor, t: Tensor) -> Tensor:
        """eps_hat(x, t) = -s(t) score(x, t)."""
        if self.prediction == "eps" and self.x0_correction is None:
            return self._net(x, t)
        return eps_from_score(self, self.sde, self.min_std)(x, t)

    def x0(self, x: Tensor, t: Tensor) -> Tensor:
        """Tweedie's denoiser x0_hat = (x + s^2 score) / m (after the x0 correction, if any)."""
        if self.prediction == "x0" and self.x0_correction is None:
            return self._net(x, t)
        if self.prediction in ("v", "flow") or self.x0_correction is not None:
            m, s = self._coefs(x, t)
            x0 = self._x0_of(self._net(x, t), x, t, m, s)
            return x0 if self.x0_correction is None else self.x0_correction(x0)
        return x0_from_score(self, self.sde, self.min_std)(x, t)

    @property
    def predicts_x0_everywhere(self) -> bool:
        """True when x0(x, t) stays finite where m(t) = 0 (x0, v and flow networks, with or
        without an x0 correction); an eps or score network's x0 divides by m."""
        return self.prediction in ("x0", "v", "flow")


def _select_rows(value: Any, index: Tensor) -> Any:
    if isinstance(value, Tensor) and value.dim() >= 1:
        return value.index_select(0, index.to(value.device))
    return value


def bind_condition(score: Callable[..., Tensor], condition: dict[str, Any], batch: int, device):
    """``score`` with per-call keyword arguments ``condition`` for a batch of ``batch`` samples.

    Tensors with a leading dimension must have one row per sample (``batch`` rows) and are
    moved to ``device``; a 0-d tensor or a Python number is broadcast to (batch,); other values
    (strings, None) are passed as they are. A ``Score`` gets them through ``with_condition``;
    any other callable is called as score(x, t, **condition).
    """
    if not isinstance(condition, dict):
        raise TypeError(f"condition must be a dict of keyword arguments, got {type(condition)}")
    bound: dict[str, Any] = {}
    for key, value in condition.items():
        if isinstance(value, bool) or value is None or isinstance(value, str):
            bound[key] = value
        elif isinstance(value, (int, float)) or (isinstance(value, Tensor) and value.dim() == 0):
            bound[key] = torch.as_tensor(value, device=device).expand(batch).clone()
        elif isinstance(value, Tensor):
            if value.shape[0] != batch:
                raise ValueError(
                    f"condition {key!r} has {value.shape[0]} rows (shape {tuple(value.shape)}); "
                    f"per-sample conditions need one row per sample, {batch}"
                )
            bound[key] = value.to(device)
        else:
            bound[key] = value
    if isinstance(score, Score):
        return score.with_condition(**bound)
    return ConditionedFn(score, bound)


class ConditionedFn:
    """A plain score function with bound keyword arguments: fn(x, t, **condition).

    Like ``Score.rows``, ``rows(index)`` selects the per-sample conditions of part of the batch.
    """

    def __init__(self, fn: Callable[..., Tensor], condition: dict[str, Any]) -> None:
        self.fn, self.condition = fn, condition

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self.fn(x, t, **self.condition)

    def rows(self, index: Tensor) -> ConditionedFn:
        return ConditionedFn(
            self.fn, {k: _select_rows(v, index) for k, v in self.condition.items()}
        )


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
    v_fn: NetFn, sde: SDE, time_label: TimeLabelFn | None = None, min_std: float = DEFAULT_MIN_STD
) -> Score:
    """score(x, t) = -eps / s with eps = (s x + m v) / (m^2 + s^2), v = v_fn(x, label(t))
    (on VP, m^2 + s^2 = 1: eps = s x + m v)."""
    return Score(v_fn, sde, "v", time_label, min_std)


def score_from_flow(
    u_fn: NetFn, sde: SDE, time_label: TimeLabelFn | None = None, min_std: float = DEFAULT_MIN_STD
) -> Score:
    """score(x, t) = -eps / s for a velocity network u = m'(t) x_0 + s'(t) eps (flow matching;
    u = eps - x_0 on ``rectified_flow()``): eps = (m u - m' x) / (m s' - s m')."""
    return Score(u_fn, sde, "flow", time_label, min_std)


def eps_from_score(
    score: Callable[[Tensor, Tensor], Tensor], sde: SDE, min_std: float = DEFAULT_MIN_STD
) -> NetFn:
    """eps(x, t) = -s(t) score(x, t)."""

    def eps(x: Tensor, t: Tensor) -> Tensor:
        s = broadcast_time(sde.marginal(t)[1].clamp_min(min_std), x)
        return -s * score(x, t)

    return eps


def x0_from_score(
    score: Callable[[Tensor, Tensor], Tensor], sde: SDE, min_std: float = DEFAULT_MIN_STD
) -> NetFn:
    """Tweedie: x0_hat(x, t) = (x + s(t)^2 score(x, t)) / m(t)."""

    def x0(x: Tensor, t: Tensor) -> Tensor:
        m, s = sde.marginal(t)
        s = broadcast_time(s.clamp_min(min_std), x)
        return (x + s * s * score(x, t)) / broadcast_time(m, x)

    return x0
