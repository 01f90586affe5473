"""Bring a model from diffusers or k-diffusion: the SDE, the score adapter and the time grid.

diffusers. A diffusers model (``UNet2DModel``, ``UNet2DConditionModel``, a DiT ...) is an
eps-, x0- or v-network trained on a discrete DDPM table of N = ``num_train_timesteps`` steps
with integer timestep labels 0 .. N-1. ``from_diffusers(model, scheduler_or_config)`` reads
the table and the target from the scheduler config:

    beta_schedule    "linear":             beta_i = linspace(beta_start, beta_end, N)
                     "scaled_linear":      beta_i = linspace(sqrt(beta_start), sqrt(beta_end), N)^2
                     "squaredcos_cap_v2":  Nichol & Dhariwal's cosine table, betas capped at 0.999
                     ``trained_betas``:    the explicit table, used as given
    prediction_type  "epsilon" -> eps, "sample" -> x0, "v_prediction" -> v
    clip_sample / thresholding   -> the x0 corrections ``clip_x0`` / ``dynamic_threshold``

and places the table on continuous time (``DiscreteSchedule``): timestep tau sits at
t = (tau + 1) / N, where alpha_bar(t) is the table's alphas_cumprod[tau] exactly, and the
network's label for time t is round(N t) - 1 (``discrete_index``).

Timesteps. diffusers' schedulers choose the inference timesteps by ``timestep_spacing``
(with n steps, N training steps):

    "leading"   tau_i = (n - 1 - i) * (N // n) + steps_offset      (DDPM/DDIM's default)
    "trailing"  tau_i = round(N - i N / n) - 1                    (ends at N - 1; "zero-SNR" paper)
    "linspace"  tau_i = round(linspace(0, N - 1, n))[::-1]        (integer in DDPM/DDIM;
                Euler/Heun keep the fractional values: see below)

``diffusers_timesteps`` computes these (DDPM/DDIM's convention); ``time_grid_from_timesteps``
turns any scheduler's integer ``timesteps`` into our time grid, so a run here evaluates the
network on the same labels as the scheduler. DPM-Solver-type schedulers use their own variant
of "linspace"/"leading" (n + 1 points, the last dropped): take their ``scheduler.timesteps``.

Fractional timesteps. diffusers' EulerDiscreteScheduler and HeunDiscreteScheduler with
"linspace" spacing (their default) keep tau = linspace(0, N - 1, n) unrounded (fractional
unless n - 1 divides N - 1), interpolate sigma~ = sqrt((1 - alpha_bar) / alpha_bar) linearly
in tau between table entries (``np.interp(tau, arange(N), sigmas)``) and pass the fractional
tau to the network. ``from_diffusers(..., fractional_timesteps=True)`` follows them: the
schedule is ``InterpolatedDiscreteSchedule`` (sigma~ piecewise linear in t on the same knots
t = (tau + 1) / N) and the label is ``fractional_timestep`` (N t - 1, unrounded); grids come
from ``time_grid_from_timesteps(scheduler.timesteps, N, fractional_timesteps=True)``. At the
table's own timesteps both conventions agree exactly; they differ only between them.

k-diffusion. A denoiser D(x, sigma) in the variance-exploding view x = x0 + sigma z is an x0
network on the VE SDE with s(t) = sigma(t) = sigma_min (sigma_max/sigma_min)^t and the
network's time input sigma(t): ``from_k_diffusion(denoiser, sigma_min, sigma_max, shape)``.
``time_grid_from_sigmas`` places a sigma schedule (k-diffusion's ``sigmas`` without the final
0) on any SDE's time axis through sigma = s(t)/m(t) = exp(-lambda/2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from scoresde.core.adapters import Score, discrete_index
from scoresde.core.checks import as_time_tensor
from scoresde.core.schedules import DiscreteSchedule
from scoresde.core.sde import SDE, VESDE, VPSDE
from scoresde.core.x0_correction import clip_x0, dynamic_threshold
from scoresde.models import ModelSpec

PREDICTION_TYPES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


def _config(scheduler_or_config: Any) -> Mapping[str, Any]:
    config = getattr(scheduler_or_config, "config", scheduler_or_config)
    if not isinstance(config, Mapping):
        raise TypeError(
            "scheduler_or_config must be a diffusers scheduler or its config (a mapping), "
            f"got {type(scheduler_or_config).__name__}"
        )
    return config


def schedule_from_config(scheduler_or_config: Any) -> DiscreteSchedule:
    """The ``DiscreteSchedule`` of a diffusers scheduler config (see the module doc)."""
    config = _config(scheduler_or_config)
    n = int(config.get("num_train_timesteps", 1000))
    trained = config.get("trained_betas")
    if config.get("rescale_betas_zero_snr", False):
        raise ValueError(
            "rescale_betas_zero_snr=True gives alpha_bar = 0 at the last timestep (zero terminal "
            "SNR): the VP prior N(0, I) and the eps-to-score map are singular there; not supported"
        )
    if trained is not None:
        return DiscreteSchedule(torch.as_tensor(np.asarray(trained), dtype=torch.float64))
    kind = config.get("beta_schedule", "linear")
    start = float(config.get("beta_start", 0.0001))
    end = float(config.get("beta_end", 0.02))
    if kind == "linear":
        return DiscreteSchedule.linear(n, start, end)
    if kind == "scaled_linear":
        return DiscreteSchedule.scaled_linear(n, start, end)
    if kind == "squaredcos_cap_v2":
        return DiscreteSchedule.cosine(n)
    raise ValueError(
        f"beta_schedule {kind!r} is not supported; known: {', '.join(BETA_SCHEDULES)} "
        "(or pass trained_betas)"
    )


class InterpolatedDiscreteSchedule(DiscreteSchedule):
    """A DDPM beta table on continuous time with sigma~ linear between the table's timesteps,
    as diffusers' Euler/Heun schedulers interpolate it (``np.interp`` over the timestep).

    With sigma~ = s/m = sqrt((1 - alpha_bar) / alpha_bar), the knots are t_i = i/N, i = 0..N,
    with sigma~_0 = 0 (data) and sigma~_i = sqrt((1 - alphas_cumprod[i-1]) / alphas_cumprod[i-1])
    (timestep tau = i - 1 sits at t = (tau + 1)/N, as in ``DiscreteSchedule``). On
    [(i-1)/N, i/N]:

        sigma~(t)       = sigma~_{i-1} + (N t - (i - 1)) (sigma~_i - sigma~_{i-1})
                        (= linear interpolation in tau = N t - 1: diffusers' sigmas for tau >= 0)
        alpha_bar(t)    = 1 / (1 + sigma~(t)^2)
        log alpha_bar   = -log(1 + sigma~^2)
        beta(t)         = -d/dt log alpha_bar = 2 sigma~ sigma~' / (1 + sigma~^2),
                          sigma~' = N (sigma~_i - sigma~_{i-1})
        log_snr(t)      = -2 log sigma~(t)
        t_from_log_snr  sigma~ = exp(-lambda/2), inverted on its interval (sigma~ is increasing)

    At the knots alpha_bar equals the table's alphas_cumprod, as in ``DiscreteSchedule``; in
    between, that class is linear in log alpha_bar instead. On [0, 1/N] (below timestep 0)
    sigma~ runs linearly from 0, where diffusers has no values.
    """

    def __init__(self, betas: Tensor | list[float]) -> None:
        super().__init__(betas)
        # sigma~^2 = 1/alpha_bar - 1 = expm1(-log alpha_bar), at t_i = i/N, i = 0..N
        self._knots_sigma = torch.sqrt(torch.expm1(self._knots_nlab))
        self._sigma_slopes = torch.diff(self._knots_sigma) * self.num_timesteps

    def _sigma_tilde(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(sigma~(t), d sigma~/dt) for each t."""
        idx, t_left, _ = self._interval(t)
        knots = self._knots_sigma.to(device=t.device, dtype=t.dtype)
        slope = self._sigma_slopes.to(device=t.device, dtype=t.dtype)[idx]
        return knots[idx] + slope * (t - t_left), slope

    def log_alpha_bar(self, t: Tensor | float) -> Tensor:
        return -torch.log1p(self._sigma_tilde(t)[0] ** 2)

    def beta(self, t: Tensor | float) -> Tensor:
        sig, slope = self._sigma_tilde(t)
        return 2 * sig * slope / (1 + sig * sig)

    def log_snr(self, t: Tensor | float) -> Tensor:
        return -2 * torch.log(self._sigma_tilde(t)[0])

    def t_from_log_snr(self, log_snr: Tensor | float) -> Tensor:
        log_snr = as_time_tensor(log_snr)
        sig = torch.exp(-0.5 * log_snr.to(torch.float64))
        return self._invert_on_knots(self._knots_sigma, self._sigma_slopes, sig).to(log_snr.dtype)

    def __repr__(self) -> str:
        return f"InterpolatedDiscreteSchedule(N={self.num_timesteps})"


def fractional_timestep(num_timesteps: int) -> Callable[[Tensor], Tensor]:
    """label = N t - 1, clamped to [0, N - 1], unrounded (t's dtype): the fractional DDPM
    timestep tau of time t = (tau + 1) / N, as diffusers' Euler/Heun pass it to the network."""
    n = int(num_timesteps)
    if n < 1:
        raise ValueError(f"num_timesteps must be a positive int, got {num_timesteps}")

    def label(t: Tensor) -> Tensor:
        return torch.clamp(t * n - 1, 0, n - 1)

    return label


def x0_correction_from_config(scheduler_or_config: Any) -> Callable[[Tensor], Tensor] | None:
    """diffusers' ``thresholding`` (dynamic, with its ratio and sample_max_value) or
    ``clip_sample`` (to +-clip_sample_range) as an x0 correction; None when neither is on."""
    config = _config(scheduler_or_config)
    if config.get("thresholding", False):
        return dynamic_threshold(
            float(config.get("dynamic_thresholding_ratio", 0.995)),
            float(config.get("sample_max_value", 1.0)),
        )
    if config.get("clip_sample", False):
        r = float(config.get("clip_sample_range", 1.0))
        return clip_x0(-r, r)
    return None


def _sample_shape(model: Any) -> tuple[int, ...]:
    config = getattr(model, "config", None)
    if config is None or "sample_size" not in config or "in_channels" not in config:
        raise ValueError(
            "cannot read the sample shape from the model's config (in_channels, sample_size); "
            "pass shape=(C, H, W)"
        )
    size = config["sample_size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    return (int(config["in_channels"]), *(int(v) for v in size))


def _model_dtype(model: Any) -> torch.dtype | None:
    dtype = getattr(model, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.dtype
    return None


class DiffusersNet:
    """net(x, label, **condition) = model(x, label, **condition), in the model's dtype.

    x and floating condition tensors are cast to the model's dtype (float16/bfloat16 models
    take half-precision inputs); the output (``.sample`` unwrapped by ``Score``) is cast back
    to x's dtype by the adapter, so the solver state keeps its precision.
    """

    def __init__(self, model: Callable[..., Any]) -> None:
        self.model = model
        self.dtype = _model_dtype(model)

    def __call__(self, x: Tensor, label: Tensor, **condition: Any) -> Any:
        if self.dtype is not None and x.dtype != self.dtype:
            x = x.to(self.dtype)
            condition = {
                k: v.to(self.dtype) if isinstance(v, Tensor) and v.is_floating_point() else v
                for k, v in condition.items()
            }
        return self.model(x, label, **condition)

    def state_dict(self) -> dict[str, Tensor]:  # for generate's model fingerprint
        sd = getattr(self.model, "state_dict", None)
        return sd() if callable(sd) else {}


def from_diffusers(
    model: Callable[..., Any],
    scheduler_or_config: Any,
    *,
    shape: tuple[int, ...] | None = None,
    apply_x0_correction: bool = True,
    fractional_timesteps: bool = False,
) -> ModelSpec:
    """A ``ModelSpec`` (score, VP SDE on the scheduler's table, sample shape) for a diffusers
    model and its scheduler (or the scheduler's config dict).

    The network is called as model(x, timestep_labels, **condition) with int64 labels
    round(N t) - 1; pass per-call conditioning (``class_labels``, ``encoder_hidden_states``)
    with ``sample(..., condition=...)`` or ``spec.score.with_condition(...)``. With
    ``apply_x0_correction`` the config's ``clip_sample``/``thresholding`` become the score's
    x0 correction, as diffusers' DDPM/DDIM/DPM-Solver schedulers apply them.

    ``fractional_timesteps=True`` follows diffusers' Euler/Heun between the table's timesteps:
    the SDE's schedule is ``InterpolatedDiscreteSchedule`` (sigma~ = s/m linear in
    tau = N t - 1 between table entries, alpha_bar = 1 / (1 + sigma~^2)) and the network's
    label is the unrounded tau = N t - 1 (float, ``fractional_timestep``). Build grids with
    ``time_grid_from_timesteps(scheduler.timesteps, N, fractional_timesteps=True)``. At
    integer timesteps both settings give the same alpha_bar and label.
    """
    if not callable(model):
        raise TypeError("model must be callable as model(x, timesteps, **condition)")
    config = _config(scheduler_or_config)
    kind = config.get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type {kind!r} is not supported; known: {', '.join(PREDICTION_TYPES)}"
        )
    if not isinstance(fractional_timesteps, bool):
        raise TypeError(f"fractional_timesteps must be True or False, got {fractional_timesteps!r}")
    schedule = schedule_from_config(config)
    n = schedule.num_timesteps
    if fractional_timesteps:
        schedule = InterpolatedDiscreteSchedule(schedule.betas)
    sde = VPSDE(schedule)
    label = fractional_timestep(n) if fractional_timesteps else discrete_index(n)
    score = Score(DiffusersNet(model), sde, PREDICTION_TYPES[kind], label)
    if apply_x0_correction:
        score = score.with_x0_correction(x0_correction_from_config(config))
    return ModelSpec(score, sde, tuple(shape) if shape is not None else _sample_shape(model))


def diffusers_timesteps(
    scheduler_or_config: Any, steps: int, timestep_spacing: str | None = None
) -> Tensor:
    """The integer inference timesteps DDPMScheduler/DDIMScheduler use for ``steps`` steps
    (their ``timestep_spacing`` and ``steps_offset``; see the module doc), int64, decreasing."""
    config = _config(scheduler_or_config)
    n = int(config.get("num_train_timesteps", 1000))
    spacing = timestep_spacing or config.get("timestep_spacing", "leading")
    if not 1 <= int(steps) <= n:
        raise ValueError(f"steps must lie in [1, num_train_timesteps = {n}], got {steps}")
    steps = int(steps)
    if spacing == "leading":
        tau = np.arange(steps)[::-1] * (n // steps) + int(config.get("steps_offset", 0))
    elif spacing == "trailing":
        tau = np.round(np.arange(n, 0, -n / steps)).astype(np.int64) - 1
    elif spacing == "linspace":
        tau = np.linspace(0, n - 1, steps).round()[::-1]
    else:
        raise ValueError(
            f"timestep_spacing {spacing!r} is not supported; known: {', '.join(TIMESTEP_SPACINGS)}"
        )
    return torch.from_numpy(np.array(tau, dtype=np.int64, copy=True))


def time_grid_from_timesteps(
    timesteps: Tensor | list[float],
    num_train_timesteps: int,
    *,
    fractional_timesteps: bool = False,
) -> Tensor:
    """Evaluation times t = (tau + 1) / N for DDPM timesteps tau (float64, for
    ``sample(time_grid=...)``): alpha_bar(t) is alphas_cumprod[tau] and the label is tau.

    Timesteps must be integers unless ``fractional_timesteps=True`` (diffusers' Euler/Heun
    with "linspace" spacing); then tau in [0, N - 1] may be fractional and the model must come
    from ``from_diffusers(..., fractional_timesteps=True)``, whose sigma~(t) at these times is
    diffusers' np.interp(tau, arange(N), sigmas) and whose label is tau itself.
    """
    tau = torch.as_tensor(timesteps).detach().cpu().flatten()
    n = int(num_train_timesteps)
    if tau.is_floating_point():
        if fractional_timesteps:
            tau = tau.double()
        elif bool((tau == tau.round()).all()):
            tau = tau.round().long()
        else:
            raise ValueError(
                "timesteps must be integers: fractional timesteps (diffusers' Euler/Heun with "
                "'linspace' spacing) sit between the table's entries; build the model with "
                "from_diffusers(..., fractional_timesteps=True) and pass "
                "fractional_timesteps=True here, or use 'leading'/'trailing' spacing"
            )
    if tau.numel() < 1 or not bool(((tau >= 0) & (tau <= n - 1)).all()):  # NaN fails too
        raise ValueError(f"timesteps must lie in [0, {n - 1}], got {tau.tolist()}")
    return (tau.double() + 1) / n


def time_grid_from_sigmas(sde: SDE, sigmas: Tensor | list[float]) -> Tensor:
    """Evaluation times with s(t)/m(t) = sigma for a decreasing sigma schedule (k-diffusion's
    ``sigmas``; a trailing 0 is dropped), float64, for ``sample(time_grid=...)``."""
    sig = torch.as_tensor(sigmas, dtype=torch.float64).detach().cpu().flatten()
    if sig.numel() > 1 and float(sig[-1]) == 0.0:
        sig = sig[:-1]
    if sig.numel() < 1 or not bool((sig > 0).all()):
        raise ValueError("sigmas must be positive (a final 0 is allowed and dropped)")
    return sde.t_from_sigma(sig).clamp(max=sde.T)


def _sigma_label(sde: VESDE) -> Callable[[Tensor], Tensor]:
    def label(t: Tensor) -> Tensor:
        return sde.sigma(t)

    return label


def from_k_diffusion(
    denoiser: Callable[..., Tensor],
    sigma_min: float,
    sigma_max: float,
    shape: tuple[int, ...],
    sigma_floor: float | None = None,
) -> ModelSpec:
    """A ``ModelSpec`` for a k-diffusion denoiser D(x, sigma, **condition) -> x0_hat.

    The SDE is ``VESDE(sigma_floor, sigma_max)`` (x_t = x0 + sigma(t) z); the score is
    (D(x, sigma(t)) - x) / sigma(t)^2, the network's time input sigma(t) itself. The prior
    N(0, sigma_max^2 I) is k-diffusion's x_T = sigma_max z. ``sigma_min``/``sigma_max`` are
    the denoiser's range (k-diffusion's ``model.sigma_min``/``sigma_max``). The SDE's
    sigma(0) = ``sigma_floor`` (default sigma_min / 2) lies below it, so every sigma of a
    k-diffusion schedule, sigma_min included, has a time t in (0, 1] (t = 0 is where the last,
    noise-free step ends); it matters only with ``denoise=False``, whose last step ends at
    sigma_floor instead of 0. Build grids from k-diffusion's sigmas with
    ``time_grid_from_sigmas`` to evaluate the denoiser exactly where k-diffusion does.
    """
    if not callable(denoiser):
        raise TypeError("denoiser must be callable as denoiser(x, sigma)")
    if not (0 < sigma_min < sigma_max and math.isfinite(sigma_max)):
        raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
    floor = 0.5 * sigma_min if sigma_floor is None else float(sigma_floor)
    if not 0 < floor <= sigma_min:
        raise ValueError(f"sigma_floor must lie in (0, sigma_min = {sigma_min}], got {floor}")
    sde = VESDE(floor, sigma_max)
    return ModelSpec(Score(denoiser, sde, "x0", _sigma_label(sde)), sde, tuple(shape))
