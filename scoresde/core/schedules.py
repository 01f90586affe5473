"""Noise schedules: how much signal survives at continuous time t in [0, 1].

A schedule is defined by one function, log alpha_bar(t), the log of the squared mean
coefficient of the variance-preserving perturbation x_t = sqrt(alpha_bar(t)) x_0 + sigma(t) z.
Everything else follows from it:

    alpha_bar(t)     = exp(log alpha_bar(t))
    beta(t)          = -d/dt log alpha_bar(t)              (the VP-SDE's beta, per unit time)
    sigma(t)         = sqrt(1 - alpha_bar(t))
    log_snr(t)       = log(alpha_bar(t) / (1 - alpha_bar(t)))
    t_from_log_snr   the inverse of log_snr (log_snr is strictly decreasing in t)

Every method takes a floating tensor of any shape (or a number) and returns one of the same
shape, without checking t: they are the coefficients solvers read inside sampling loops.
``check_time(t)`` validates times at entry points (``sample`` and the grids do).

Writing your own schedule: subclass ``NoiseSchedule`` and implement ``log_alpha_bar``; beta
then comes from autograd, and the inverse of log-SNR from a bisection. Or pass a function to
``LogAlphaBarSchedule``. Override ``beta`` and ``t_from_log_snr`` when closed forms exist.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from scoresde.core.checks import as_float, as_time_tensor, check_times

T_MAX = 1.0


def solve_decreasing(
    fn: Callable[[Tensor], Tensor], target: Tensor, lo: float, hi: float, iterations: int = 60
) -> Tensor:
    """The x in [lo, hi] with fn(x) = target, for a strictly decreasing fn, by bisection
    (float64; 60 halvings reach below float64 resolution of [0, 1]). Values of ``target``
    outside fn's range give the nearer end."""
    target = target.to(torch.float64)
    low = torch.full_like(target, lo)
    high = torch.full_like(target, hi)
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        above = fn(mid) > target  # still too early: move right
        low = torch.where(above, mid, low)
        high = torch.where(above, high, mid)
    return 0.5 * (low + high)


class NoiseSchedule:
    """Base class. Subclasses implement ``log_alpha_bar(t)``; t in [0, 1].

    The methods are the coefficient contract every solver reads: tensor in, tensor out, no
    check of t (they run inside sampling loops, where a check would read the tensor on the
    host). Entry points (``sample``, the grids) validate times once, with ``check_time``.
    """

    T: float = T_MAX

    # -- to implement -------------------------------------------------------------------------
    def log_alpha_bar(self, t: Tensor | float) -> Tensor:
        """log alpha_bar(t); t in [0, 1]."""
        raise NotImplementedError

    # -- derived, overridable with closed forms -----------------------------------------------
    def alpha_bar(self, t: Tensor | float) -> Tensor:
        """alpha_bar(t) = exp(log alpha_bar(t)), the squared VP mean coefficient."""
        return torch.exp(self.log_alpha_bar(as_time_tensor(t)))

    def beta(self, t: Tensor | float) -> Tensor:
        """beta(t) = -d/dt log alpha_bar(t), per unit of t (here by autograd)."""
        t = as_time_tensor(t)
        with torch.enable_grad():
            tt = t.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_alpha_bar(tt).sum(), tt)
        return -grad

    def sigma(self, t: Tensor | float) -> Tensor:
        """sigma(t) = sqrt(1 - alpha_bar(t)), the VP marginal std (computed with expm1)."""
        return torch.sqrt(-torch.expm1(self.log_alpha_bar(as_time_tensor(t))))

    def log_snr(self, t: Tensor | float) -> Tensor:
        """log_snr(t) = log(alpha_bar / (1 - alpha_bar)); +inf at t = 0."""
        log_ab = self.log_alpha_bar(as_time_tensor(t))
        return log_ab - torch.log(-torch.expm1(log_ab))

    def t_from_log_snr(self, log_snr: Tensor | float) -> Tensor:
        """The t in [0, 1] at which log_snr(t) equals the given value (clamped to [0, 1]);
        here by bisection (log_snr is strictly decreasing)."""
        lam = as_time_tensor(log_snr)
        return solve_decreasing(self.log_snr, lam, 0.0, self.T).to(lam.dtype)

    # -- validation, for entry points -----------------------------------------------------------
    def check_time(self, t: Tensor | float, name: str = "t") -> Tensor:
        """``t`` as a tensor, after checking it lies in [0, T] (reads it on the host)."""
        t = as_time_tensor(t)
        check_times(name, t, 0.0, self.T, include_low=True)
        return t

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LinearSchedule(NoiseSchedule):
    """Song et al.'s VP schedule: beta(t) = beta_min + t (beta_max - beta_min).

    log alpha_bar(t) = -(beta_min t + 1/2 t^2 (beta_max - beta_min)). The defaults (0.1, 20)
    are the continuous limit of DDPM's linear table (1e-4 .. 0.02 over N = 1000 steps, times N).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        beta_min, beta_max = as_float("beta_min", beta_min), as_float("beta_max", beta_max)
        if not (math.isfinite(beta_min) and beta_min >= 0):
            raise ValueError(f"beta_min must be a finite number >= 0, got {beta_min}")
        if not (math.isfinite(beta_max) and beta_max > beta_min):
            raise ValueError(
                f"beta_max must be finite and > beta_min = {beta_min}, got beta_max = {beta_max}"
            )
        self.beta_min, self.beta_max = beta_min, beta_max

    def log_alpha_bar(self, t: Tensor | float) -> Tensor:
        t = as_time_tensor(t)
        return -(self.beta_min + 0.5 * (self.beta_max - self.beta_min) * t) * t

    def beta(self, t: Tensor | float) -> Tensor:
        t = as_time_tensor(t)
        return self.beta_min + (self.beta_max - self.beta_min) * t

    def t_from_log_snr(self, log_snr: Tensor | float) -> Tensor:
        # -log alpha_bar = softplus(-lambda) =: c solves 1/2 db t^2 + b0 t - c = 0;
        # t = 2c / (b0 + sqrt(b0^2 + 2 db c)) avoids cancellation when b0 is large.
        log_snr = as_time_tensor(log_snr)
        c = torch.nn.functional.softplus(-log_snr)
        b0, db = self.beta_min, self.beta_max - self.beta_min
        t = 2 * c / (b0 + torch.sqrt(b0 * b0 + 2 * db * c))
        return t.clamp(0.0, self.T)

    def __repr__(self) -> str:
        return f"LinearSchedule(beta_min={self.beta_min:g}, beta_max={self.beta_max:g})"


class CosineSchedule(NoiseSchedule):
    """Nichol & Dhariwal's cosine schedule, with a documented cap on beta.

    alpha_bar(t) = f(t) / f(0),   f(t) = cos^2(((t + s) / (1 + s)) pi/2),
    beta(t) = pi/(1 + s) tan(((t + s)/(1 + s)) pi/2).

    The guard: beta grows without bound as t -> 1 (alpha_bar(1) = 0), so beta is capped at
    ``max_beta``. Past the time t* where the cosine beta reaches the cap, log alpha_bar
    continues as a straight line of slope -max_beta, so beta = -d log alpha_bar/dt holds
    everywhere and alpha_bar(1) > 0. With the default max_beta = 100 and s = 0.008, t* = 0.980
    and alpha_bar(1) = 1.3e-4 (log-SNR -8.9), close to the linear VP schedule's 4.5e-5.
    ``max_beta=math.inf`` gives the raw cosine form (then keep sampling times below 1).
    """

    def __init__(self, s: float = 0.008, max_beta: float = 100.0) -> None:
        s = as_float("s", s)
        if not (math.isfinite(s) and s >= 0):
            raise ValueError(f"s must be a finite number >= 0, got {s}")
        if not (max_beta > 0):
            raise ValueError(f"max_beta must be > 0 (math.inf for no cap), got {max_beta}")
        self.s, self.max_beta = s, as_float("max_beta", max_beta)
        self._log_f0 = 2 * math.log(math.cos(s / (1 + s) * math.pi / 2))
        if math.isinf(self.max_beta):
            self.t_cap = self.T
        else:
            # pi/(1+s) tan(theta) = max_beta  ->  theta*, t* = theta* (1+s) 2/pi - s
            theta = math.atan(self.max_beta * (1 + s) / math.pi)
            self.t_cap = min(self.T, theta * (1 + s) * 2 / math.pi - s)
        self._log_ab_cap = self._cosine_log_alpha_bar(torch.tensor(self.t_cap, dtype=torch.float64))
        self._log_ab_cap = float(self._log_ab_cap)

    def _theta(self, t: Tensor) -> Tensor:
        return (t + self.s) / (1 + self.s) * (math.pi / 2)

    def _cosine_log_alpha_bar(self, t: Tensor) -> Tensor:
        return 2 * torch.log(torch.cos(self._theta(t))) - self._log_f0

    def log_alpha_bar(self, t: Tensor | float) -> Tensor:
        t = as_time_tensor(t)
        # clamped at 0: at t = 0 rounding gives +3e-20, and sqrt(1 - alpha_bar) would be NaN
        inside = self._cosine_log_alpha_bar(torch.clamp(t, max=self.t_cap)).clamp(max=0.0)
        tail = self._log_ab_cap - self.max_beta * (t - self.t_cap)
        return torch.where(t <= self.t_cap, inside, tail)

    def beta(self, t: Tensor | float) -> Tensor:
        t = as_time_tensor(t)
        inside = math.pi / (1 + self.s) * torch.tan(self._theta(torch.clamp(t, max=self.t_cap)))
        return torch.where(t <= self.t_cap, inside, torch.full_like(t, self.max_beta))

    def t_from_log_snr(self, log_snr: Tensor | float) -> Tensor:
        log_snr = as_time_tensor(log_snr)
        log_ab = -torch.nn.functional.softplus(-log_snr)  # log sigmoid(lambda)
        cos_theta = torch.exp(0.5 * (log_ab + self._log_f0)).clamp(max=1.0)
        t_inside = torch.arccos(cos_theta) * (1 + self.s) * 2 / math.pi - self.s
        t_tail = self.t_cap + (self._log_ab_cap - log_ab) / self.max_beta
        t = torch.where(log_ab >= self._log_ab_cap, t_inside, t_tail)
        return t.clamp(0.0, self.T)

    def __repr__(self) -> str:
        return f"CosineSchedule(s={self.s:g}, max_beta={self.max_beta:g})"


class DiscreteSchedule(NoiseSchedule):
    """A DDPM beta table of length N placed on continuous time.

    Timestep i = 1..N sits at t = i/N, where alpha_bar equals prod_{j<=i} (1 - beta_j) exactly
    (alpha_bar(0) = 1). Between grid points log alpha_bar is linear in t, so beta(t) is
    piecewise constant: beta(t) = -N log(1 - beta_i) on ((i-1)/N, i/N]. A network trained on the
    table can therefore be sampled by continuous-time solvers too; the network's integer label
    for time t is chosen by the adapter (see ``scoresde.core.adapters.TimeLabel``).

    Zero terminal SNR: the last beta may be exactly 1 (a table rescaled by
    ``rescale_zero_terminal_snr``, Lin et al. 2024), so alpha_bar(1) = 0. log alpha_bar is then
    -inf at t = 1, and on the last interval ((N-1)/N, 1] sqrt(alpha_bar) = m falls linearly in t
    to 0 instead: m(t) = m_(N-1) N (1 - t), beta(t) = 2 / (1 - t).

    The table is kept in float64 on the CPU; evaluation moves it to t's device once per call.
    """

    def __init__(self, betas: Tensor | list[float]) -> None:
        b = torch.as_tensor(betas, dtype=torch.float64).flatten().cpu()
        if b.numel() < 1:
            raise ValueError("betas must contain at least one value")
        inside = (b > 0) & (b < 1)
        inside[-1] = inside[-1] | ((b[-1] == 1) & (b.numel() > 1))  # zero terminal SNR
        if not bool(torch.all(inside)):
            bad = b[~inside][0].item()
            raise ValueError(
                f"betas must lie in (0, 1) (exclusive; the last may be 1 for zero terminal "
                f"SNR), got {bad!r}"
            )
        self.betas = b
        self.num_timesteps = int(b.numel())
        self.alphas_cumprod = torch.cumprod(1 - b, dim=0)
        self.zero_terminal = bool(self.alphas_cumprod[-1] == 0)
        # m at the last finite knot (N-1)/N, for the linear-m last interval of a zero-SNR table
        self._m_last = float(self.alphas_cumprod[-2].sqrt()) if self.zero_terminal else 0.0
        # knots t_i = i/N for i = 0..N with -log alpha_bar (increasing) at each
        self._knots_t = (
            torch.arange(self.num_timesteps + 1, dtype=torch.float64) / self.num_timesteps
        )
        self._knots_nlab = torch.cat(
            [torch.zeros(1, dtype=torch.float64), -torch.log(self.alphas_cumprod)]
        )
        self._slopes = torch.diff(self._knots_nlab) * self.num_timesteps  # beta on each interval

    @classmethod
    def linear(cls, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        """Ho et al.'s linear table: beta_i = linspace(beta_start, beta_end, N) (float64)."""
        return cls(torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64))

    @classmethod
    def scaled_linear(
        cls, num_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
    ):
        """Latent-diffusion's table: beta_i = linspace(sqrt(beta_start), sqrt(beta_end), N)^2."""
        root = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64)
        return cls(root**2)

    @classmethod
    def cosine(cls, num_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999):
        """Nichol & Dhariwal's table (diffusers' "squaredcos_cap_v2").

        beta_i = min(1 - f(i/N) / f((i-1)/N), max_beta),  f(t) = cos^2(((t + s)/(1 + s)) pi/2).
        """
        i = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
        f = torch.cos((i + s) / (1 + s) * math.pi / 2) ** 2
        return cls(torch.clamp(1 - f[1:] / f[:-1], max=max_beta))

    def _interval(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Index i (0-based interval), left knot time and slope for each t."""
        n = self.num_timesteps
        idx = torch.clamp(torch.ceil(t.detach() * n).long() - 1, 0, n - 1)
        knots_t = self._knots_t.to(device=t.device, dtype=t.dtype)
        return idx, knots_t[idx], self._slopes.to(device=t.device, dtype=t.dtype)[idx]

    def _in_last(self, idx: Tensor) -> Tensor:
        """Where the linear-m last interval of a zero-SNR table applies."""
        return (
            idx == self.num_timesteps - 1
            if self.zero_terminal
            else torch.zeros_like(idx, dtype=torch.bool)
        )

    def log_alpha_bar(self, t: Tensor | float) -> Tensor:
        t = as_time_tensor(t)
        idx, t_left, slope = self._interval(t)
        nlab_left = self._knots_nlab.to(device=t.device, dtype=t.dtype)[idx]
        out = -(nlab_left + slope * (t - t_left))
        if not self.zero_terminal:
            return out
        last = 2 * torch.log(self._m_last * self.num_timesteps * (1 - t).clamp_min(0.0))
        return torch.where(self._in_last(idx), last, out)

    def beta(self, t: Tensor | float) -> Tensor:
        t = as_time_tensor(t)
        idx, _, slope = self._interval(t)
        if not self.zero_terminal:
            return slope
        return torch.where(self._in_last(idx), 2 / (1 - t), slope)

    def t_from_log_snr(self, log_snr: Tensor | float) -> Tensor:
        log_snr = as_time_tensor(log_snr)
        nlab = torch.nn.functional.softplus(-log_snr.to(torch.float64))  # -log alpha_bar
        t = self._invert_on_knots(self._knots_nlab, self._slopes, nlab)
        if self.zero_terminal:  # past the last finite knot: m = exp(-nlab / 2) = m_last N (1 - t)
            beyond = nlab > self._knots_nlab[-2].to(nlab.device)
            last = 1 - torch.exp(-0.5 * nlab) / (self._m_last * self.num_timesteps)
            t = torch.where(beyond, last, t).clamp(0.0, self.T)
        return t.to(log_snr.dtype)

    def _invert_on_knots(self, knots: Tensor, slopes: Tensor, value: Tensor) -> Tensor:
        """The t in [0, T] where a quantity that is linear between the knots t_i = i/N, with
        increasing ``knots`` values and per-interval ``slopes``, equals ``value`` (float64)."""
        knots = knots.to(value.device)
        idx = torch.clamp(
            torch.searchsorted(knots, value.contiguous()) - 1, 0, self.num_timesteps - 1
        )
        t = (
            self._knots_t.to(value.device)[idx]
            + (value - knots[idx]) / slopes.to(value.device)[idx]
        )
        return t.clamp(0.0, self.T)

    def __repr__(self) -> str:
        return f"DiscreteSchedule(N={self.num_timesteps})"


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Lin et al. 2024 (Algorithm 1): the table whose sqrt(alpha_bar) is shifted to end at 0
    and scaled to keep its first value, sqrt(ab') = (sqrt(ab) - sqrt(ab_N)) sqrt(ab_1) /
    (sqrt(ab_1) - sqrt(ab_N)); the betas follow from ab'_i / ab'_(i-1), and the last is 1.
    Float64, as diffusers' ``rescale_zero_terminal_snr`` computes it."""
    b = torch.as_tensor(betas, dtype=torch.float64).flatten()
    root = torch.cumprod(1 - b, dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    ab = root**2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return 1 - alphas


class LogAlphaBarSchedule(NoiseSchedule):
    """A user-defined schedule from a function t -> log alpha_bar(t).

    The function must be differentiable by autograd (beta is its negative derivative) unless
    ``beta_fn`` is given, decreasing, with log alpha_bar(0) = 0. Example, a constant beta = 10:
    ``LogAlphaBarSchedule(lambda t: -10 * t, beta_fn=lambda t: torch.full_like(t, 10.0))``.
    """

    def __init__(
        self,
        log_alpha_bar_fn: Callable[[Tensor], Tensor],
        beta_fn: Callable[[Tensor], Tensor] | None = None,
        name: str = "custom",
    ) -> None:
        if not callable(log_alpha_bar_fn):
            raise TypeError("log_alpha_bar_fn must be callable: t -> log alpha_bar(t)")
        probe = torch.linspace(0, 1, 33, dtype=torch.float64)
        values = log_alpha_bar_fn(probe)
        if not isinstance(values, Tensor) or values.shape != probe.shape:
            raise ValueError("log_alpha_bar_fn must map a tensor of times to one of the same shape")
        if beta_fn is None:
            with torch.enable_grad():
                traced = log_alpha_bar_fn(probe.clone().requires_grad_(True))
            if not (isinstance(traced, Tensor) and traced.requires_grad):
                raise ValueError(
                    "log_alpha_bar_fn must be differentiable by autograd (beta is its negative "
                    "derivative): write it with torch operations (no numpy), or give beta_fn"
                )
        elif not callable(beta_fn):
            raise TypeError("beta_fn must be callable: t -> beta(t)")
        if abs(float(values[0])) > 1e-6 or bool(torch.any(torch.diff(values) >= 0)):
            raise ValueError(
                "log_alpha_bar_fn must be 0 at t = 0 and strictly decreasing on [0, 1]"
            )
        self._fn, self._beta_fn, self.name = log_alpha_bar_fn, beta_fn, name

    def log_alpha_bar(self, t: Tensor | float) -> Tensor:
        t = as_time_tensor(t)
        return self._fn(t)

    def beta(self, t: Tensor | float) -> Tensor:
        t = as_time_tensor(t)
        return self._beta_fn(t) if self._beta_fn is not None else super().beta(t)

    def __repr__(self) -> str:
        return f"LogAlphaBarSchedule(name={self.name!r})"
