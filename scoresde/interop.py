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
                Euler/Heun keep the fractional values, which a discrete table cannot place)

``diffusers_timesteps`` computes these (DDPM/DDIM's convention); ``time_grid_from_timesteps``
turns any scheduler's integer ``timesteps`` into our time grid, so a run here evaluates the
network on the same labels as the scheduler. DPM-Solver-type schedulers use their own variant
of "linspace"/"leading" (n + 1 points, the last dropped): take their ``scheduler.timesteps``.

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

from scoresde.adapters import Score, discrete_index
from scoresde.model import ModelSpec
from scoresde.schedules import DiscreteSchedule
from scoresde.sde import SDE, VESDE, VPSDE
from scoresde.x0_correction import clip_x0, dynamic_threshold

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
) -> ModelSpec:
    """A ``ModelSpec`` (score, VP SDE on the scheduler's table, sample shape) for a diffusers
    model and its scheduler (or the scheduler's config dict).

    The network is called as model(x, timestep_labels, **condition) with int64 labels
    round(N t) - 1; pass per-call conditioning (``class_labels``, ``encoder_hidden_states``)
    with ``sample(..., condition=...)`` or ``spec.score.with_condition(...)``. With
    ``apply_x0_correction`` the config's ``clip_sample``/``thresholding`` become the score's
    x0 correction, as diffusers' DDPM/DDIM/DPM-Solver schedulers apply them.
    """
    if not callable(model):
        raise TypeError("model must be callable as model(x, timesteps, **condition)")
    config = _config(scheduler_or_config)
    kind = config.get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type {kind!r} is not supported; known: {', '.join(PREDICTION_TYPES)}"
        )
    schedule = schedule_from_config(config)
    sde = VPSDE(schedule)
    score = Score(
        DiffusersNet(model), sde, PREDICTION_TYPES[kind], discrete_index(schedule.num_timesteps)
    )
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


def time_grid_from_timesteps(timesteps: Tensor | list[int], num_train_timesteps: int) -> Tensor:
    """Evaluation times t = (tau + 1) / N for integer DDPM timesteps tau (float64, for
    ``sample(time_grid=...)``): alpha_bar(t) is alphas_cumprod[tau] and the label is tau."""
    tau = torch.as_tensor(timesteps).detach().cpu().flatten()
    n = int(num_train_timesteps)
    if tau.is_floating_point():
        if not bool((tau == tau.round()).all()):
            raise ValueError(
                "timesteps must be integers: fractional timesteps (diffusers' Euler/Heun with "
                "'linspace' spacing) sit between the table's entries; use 'leading'/'trailing' "
                "spacing or a step count that divides N - 1"
            )
        tau = tau.round().long()
    if tau.numel() < 1 or bool((tau < 0).any()) or bool((tau > n - 1).any()):
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
    t = sde._t_from_log_snr(-2 * torch.log(sig))
    return t.clamp(max=sde.T)


def _sigma_label(sde: VESDE) -> Callable[[Tensor], Tensor]:
    def label(t: Tensor) -> Tensor:
        return sde._sigma(t)

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
