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

from scoresde.core.adapters import Score, continuous_time, discrete_index
from scoresde.core.checks import as_time_tensor, broadcast_time
from scoresde.core.gaussian_path import rectified_flow
from scoresde.core.schedules import DiscreteSchedule, rescale_zero_terminal_snr
from scoresde.core.sde import SDE, VESDE, VPSDE
from scoresde.core.x0_correction import clip_x0, dynamic_threshold
from scoresde.models import ModelSpec

PREDICTION_TYPES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
# DPMSolverMultistep / UniPC with use_flow_sigmas: diffusers' v formula there, x0 = (1 - sigma)
# x - sigma v, is not the v of the rectified-flow path, so v_prediction is refused
FLOW_SIGMA_PREDICTION_TYPES = {"flow_prediction": "flow", "epsilon": "eps", "sample": "x0"}
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")

# Schedulers whose model is a DDPM-table network (eps / x0 / v on a beta table, integer or
# interpolated timestep labels): the config's table, target, clipping and zero-SNR rescaling
# are all the model needs; the rest of their config (solver order, spacing, final sigma,
# Karras sigmas, eta ...) chooses the sampler and the grid, which are ours to choose.
DDPM_SCHEDULERS = frozenset(
    {
        "DDPMScheduler",
        "DDIMScheduler",
        "DDPMParallelScheduler",
        "DDIMParallelScheduler",
        "DEISMultistepScheduler",
        "DPMSolverMultistepScheduler",
        "DPMSolverSinglestepScheduler",
        "DPMSolverSDEScheduler",
        "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
        "HeunDiscreteScheduler",
        "KDPM2DiscreteScheduler",
        "KDPM2AncestralDiscreteScheduler",
        "LMSDiscreteScheduler",
        "PNDMScheduler",
        "UniPCMultistepScheduler",
    }
)
# Flow-matching schedulers: a velocity network on the rectified-flow path sigma in [0, 1]
FLOW_MATCH_SCHEDULERS = frozenset(
    {"FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"}
)
# DDPM-type schedulers whose use_flow_sigmas / flow_shift put the model on rectified flow
FLOW_SIGMA_SCHEDULERS = frozenset({"DPMSolverMultistepScheduler", "UniPCMultistepScheduler"})
# Keys of schedulers from_diffusers does not take, which mark a config without _class_name
# (diffusers' ``scheduler.config`` has none) as not a DDPM-table config: FlowMatch keys (pass
# the scheduler or name its class), and keys that change the table or the model's output
# elsewhere (CogVideoX's SNR shift, LCM/TCD's consistency parametrisation, EDM, Wuerstchen).
FOREIGN_KEYS = {
    "shift": "FlowMatch",
    "invert_sigmas": "FlowMatch",
    "shift_terminal": "FlowMatch",
    "stochastic_sampling": "FlowMatch",
    "snr_shift_scale": "CogVideoX",
    "timestep_scaling": "LCM/TCD",
    "original_inference_steps": "LCM/TCD",
    "sigma_data": "EDM/consistency-model",
    "sigma_schedule": "EDM",
    "scaler": "Wuerstchen",
}
# Config values that change the model's maths (its output, labels or sigma interpolation) in
# ways from_diffusers does not follow: refused by key and value, with the reason.
REFUSED_VALUES: dict[str, tuple[tuple[Any, ...], str]] = {
    "variance_type": (
        ("learned", "learned_range"),
        "the network also outputs a variance (extra channels); only its mean part is a "
        "prediction here",
    ),
    "timestep_type": (
        ("continuous",),
        "the network is called with 0.25 log sigma, not the DDPM timestep",
    ),
}
TIME_SHIFT_TYPES = ("exponential", "linear")


def _config(scheduler_or_config: Any) -> Mapping[str, Any]:
    config = getattr(scheduler_or_config, "config", scheduler_or_config)
    if not isinstance(config, Mapping):
        raise TypeError(
            "scheduler_or_config must be a diffusers scheduler or its config (a mapping), "
            f"got {type(scheduler_or_config).__name__}"
        )
    return config


def scheduler_class(scheduler_or_config: Any) -> str | None:
    """The scheduler's class name: the object's type, else the config's ``_class_name``
    (None for a plain dict without one, read as a DDPM-table config)."""
    if not isinstance(scheduler_or_config, Mapping) and hasattr(scheduler_or_config, "config"):
        return type(scheduler_or_config).__name__
    name = _config(scheduler_or_config).get("_class_name")
    return None if name is None else str(name)


def is_flow_config(scheduler_or_config: Any) -> bool:
    """True for a flow-matching model: a FlowMatch scheduler, or DPMSolverMultistep / UniPC
    with ``use_flow_sigmas=True`` (checked: unknown schedulers and keys raise)."""
    config = _config(scheduler_or_config)
    cls = check_scheduler_config(config, scheduler_class(scheduler_or_config))
    return cls in FLOW_MATCH_SCHEDULERS or bool(config.get("use_flow_sigmas", False))


def check_scheduler_config(config: Mapping[str, Any], cls: str | None) -> str | None:
    """Raise a ValueError naming the scheduler class or config key that from_diffusers does
    not understand (see ``REFUSED_VALUES`` and the module doc); return the class name."""
    if cls is not None and cls not in DDPM_SCHEDULERS | FLOW_MATCH_SCHEDULERS:
        raise ValueError(
            f"scheduler {cls!r} is not supported by from_diffusers; known: "
            f"{', '.join(sorted(DDPM_SCHEDULERS | FLOW_MATCH_SCHEDULERS))}"
        )
    if cls is None:
        foreign = [k for k in FOREIGN_KEYS if config.get(k) not in (None, False)]
        if foreign:
            raise ValueError(
                f"config key {foreign[0]!r} belongs to a {FOREIGN_KEYS[foreign[0]]} scheduler, "
                "and the config names no _class_name: pass the scheduler itself, or add "
                "'_class_name' (e.g. 'FlowMatchEulerDiscreteScheduler') to the config"
            )
    for key, (values, why) in REFUSED_VALUES.items():
        if config.get(key) in values:
            raise ValueError(f"{key}={config[key]!r} is not supported: {why}")
    if config.get("use_flow_sigmas", False) and cls not in FLOW_SIGMA_SCHEDULERS:
        raise ValueError(
            f"use_flow_sigmas=True is supported for {', '.join(sorted(FLOW_SIGMA_SCHEDULERS))}"
            f", not {cls or 'a config without _class_name'}"
        )
    prediction = config.get("prediction_type")
    if prediction == "flow_prediction" and not config.get("use_flow_sigmas", False):
        raise ValueError(
            "prediction_type 'flow_prediction' needs use_flow_sigmas=True (the model is a "
            "velocity on the rectified-flow path, not on the beta table)"
        )
    if config.get("use_flow_sigmas", False) and prediction not in (
        None,
        *FLOW_SIGMA_PREDICTION_TYPES,
    ):
        raise ValueError(
            f"prediction_type {prediction!r} with use_flow_sigmas=True is not supported; known: "
            f"{', '.join(FLOW_SIGMA_PREDICTION_TYPES)} (diffusers' v there, (1 - sigma) x - "
            "sigma v, is not the v of the rectified-flow path)"
        )
    return cls


def schedule_from_config(scheduler_or_config: Any) -> DiscreteSchedule:
    """The ``DiscreteSchedule`` of a diffusers scheduler config (see the module doc).

    ``rescale_betas_zero_snr=True`` gives ``DiscreteSchedule(rescale_zero_terminal_snr(betas))``
    (Lin et al. 2024: sqrt(alpha_bar) shifted to end at 0 and rescaled to keep its first value,
    last beta = 1, alpha_bar(1) = 0). Flow-matching configs have no beta table and raise.
    """
    config = _config(scheduler_or_config)
    return _table(config, check_scheduler_config(config, scheduler_class(scheduler_or_config)))


def _table(config: Mapping[str, Any], cls: str | None) -> DiscreteSchedule:
    """schedule_from_config on a checked config of class ``cls``."""
    if cls in FLOW_MATCH_SCHEDULERS or config.get("use_flow_sigmas", False):
        what = cls if cls in FLOW_MATCH_SCHEDULERS else f"{cls} with use_flow_sigmas=True"
        raise ValueError(
            f"{what} is a flow-matching scheduler: its model lives on the rectified-flow path, "
            "not on a beta table; use from_diffusers (its SDE is rectified_flow(shift))"
        )
    n = int(config.get("num_train_timesteps", 1000))
    trained = config.get("trained_betas")
    if trained is not None:
        table = DiscreteSchedule(torch.as_tensor(np.asarray(trained), dtype=torch.float64))
    else:
        kind = config.get("beta_schedule", "linear")
        start = float(config.get("beta_start", 0.0001))
        end = float(config.get("beta_end", 0.02))
        if kind == "linear":
            table = DiscreteSchedule.linear(n, start, end)
        elif kind == "scaled_linear":
            table = DiscreteSchedule.scaled_linear(n, start, end)
        elif kind == "squaredcos_cap_v2":
            table = DiscreteSchedule.cosine(n)
        else:
            raise ValueError(
                f"beta_schedule {kind!r} is not supported; known: {', '.join(BETA_SCHEDULES)} "
                "(or pass trained_betas)"
            )
    if config.get("rescale_betas_zero_snr", False):
        return DiscreteSchedule(rescale_zero_terminal_snr(table.betas))
    return table


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


class FlowTimestep:
    """The label diffusers gives a flow model at time t: N s(t), its flow sigma s(t) times
    ``num_train_timesteps`` (FlowMatch schedulers pass it unrounded, float); with
    ``inverted`` N (1 - s(t)) (FlowMatch's ``invert_sigmas``); with ``integer``
    floor(N s(t)) as int64 (DPMSolverMultistep / UniPC with flow sigmas cast their float
    timesteps sigma N to int64, which truncates)."""

    def __init__(
        self, sde: SDE, num_train_timesteps: int, *, inverted: bool = False, integer: bool = False
    ) -> None:
        self.sde, self.n = sde, int(num_train_timesteps)
        self.inverted, self.integer = bool(inverted), bool(integer)

    def __call__(self, t: Tensor) -> Tensor:
        sigma = self.sde.marginal(t)[1]
        tau = self.n * (1 - sigma if self.inverted else sigma)
        return torch.floor(tau).long() if self.integer else tau


class FlowMatchNet:
    """A diffusers flow model as a network of our time t: net(x, t) = c(t) model(x, label(t)).

    diffusers' flow models predict the velocity per unit flow sigma, u = dx/dsigma =
    eps - x0 (on m = 1 - s, dm/ds = -1), whatever the shift. ``score_from_flow`` reads a
    velocity per unit t, m'(t) x0 + s'(t) eps = s'(t) (eps - x0), so a velocity output is
    scaled by c(t) = s'(t) (the shift's d sigma / dt; 1 on the unshifted path), negated under
    ``invert_sigmas`` (whose models predict x0 - eps); eps and x0 outputs pass as they are
    (c = 1). The label is ``FlowTimestep``'s, diffusers' timestep for sigma = s(t).
    """

    def __init__(
        self, model: Callable[..., Any], label: FlowTimestep, *, velocity: bool = True
    ) -> None:
        self.model, self.label, self.velocity = model, label, bool(velocity)

    def __call__(self, x: Tensor, t: Tensor, **condition: Any) -> Tensor:
        out = self.model(x, self.label(t), **condition)
        out = out.sample if hasattr(out, "sample") and not isinstance(out, Tensor) else out
        if not self.velocity:
            return out
        rate = self.label.sde.marginal_rate(t)[1]
        return broadcast_time(-rate if self.label.inverted else rate, out) * out

    def state_dict(self) -> dict[str, Tensor]:  # for generate's model fingerprint
        sd = getattr(self.model, "state_dict", None)
        return sd() if callable(sd) else {}


def flow_shift_from_config(scheduler_or_config: Any, mu: float | None = None) -> float:
    """The shift a of a flow config's path rectified_flow(a) (sigma' = a sigma / (1 + (a - 1)
    sigma)): FlowMatch's ``shift``, DPMSolverMultistep / UniPC's ``flow_shift``; with
    ``use_dynamic_shifting`` the ``mu`` of set_timesteps(mu=...), required: a = e^mu
    (time_shift_type "exponential") or a = mu ("linear")."""
    return _flow_shift(_config(scheduler_or_config), scheduler_class(scheduler_or_config), mu)


def _flow_shift(config: Mapping[str, Any], cls: str | None, mu: float | None) -> float:
    if not config.get("use_dynamic_shifting", False):
        if mu is not None:
            raise ValueError("mu is used only with use_dynamic_shifting=True; this config has none")
        key = "shift" if cls in FLOW_MATCH_SCHEDULERS else "flow_shift"
        return float(config.get(key, 1.0))
    if mu is None:
        raise ValueError(
            "mu: this config has use_dynamic_shifting=True, whose shift is set per call by "
            "set_timesteps(mu=...); pass the same mu to from_diffusers(..., mu=mu)"
        )
    kind = config.get("time_shift_type", "exponential")
    if kind not in TIME_SHIFT_TYPES:
        raise ValueError(
            f"time_shift_type {kind!r} is not supported; known: {', '.join(TIME_SHIFT_TYPES)}"
        )
    if kind == "linear":
        if not float(mu) > 0:
            raise ValueError(f"mu must be > 0 with time_shift_type='linear' (shift = mu), got {mu}")
        return float(mu)
    return math.exp(float(mu))


def _flow_spec(
    model: Callable[..., Any],
    config: Mapping[str, Any],
    cls: str | None,
    shape: tuple[int, ...],
    apply_x0_correction: bool,
    mu: float | None,
) -> ModelSpec:
    """from_diffusers for a flow-matching config (see ``from_diffusers``)."""
    sde = rectified_flow(_flow_shift(config, cls, mu))
    n = int(config.get("num_train_timesteps", 1000))
    inverted = cls in FLOW_MATCH_SCHEDULERS and bool(config.get("invert_sigmas", False))
    if cls in FLOW_MATCH_SCHEDULERS:
        prediction = "flow"
    else:
        prediction = FLOW_SIGMA_PREDICTION_TYPES[config.get("prediction_type", "epsilon")]
    label = FlowTimestep(sde, n, inverted=inverted, integer=cls in FLOW_SIGMA_SCHEDULERS)
    net = FlowMatchNet(DiffusersNet(model), label, velocity=prediction == "flow")
    score = Score(net, sde, prediction, continuous_time())
    if apply_x0_correction:
        score = score.with_x0_correction(x0_correction_from_config(config))
    return ModelSpec(score, sde, shape)


def from_diffusers(
    model: Callable[..., Any],
    scheduler_or_config: Any,
    *,
    shape: tuple[int, ...] | None = None,
    apply_x0_correction: bool = True,
    fractional_timesteps: bool = False,
    mu: float | None = None,
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

    Zero terminal SNR. With ``rescale_betas_zero_snr=True`` the table ends at alpha_bar = 0;
    x0 there needs a v- or x0-network (Lin et al. 2024), so an eps-network is refused. Start
    at timestep N - 1 with ``timestep_spacing="trailing"``; ``sample`` takes the limit step
    from m = 0.

    Flow matching. A FlowMatchEuler/FlowMatchHeun scheduler, or DPMSolverMultistep / UniPC
    with ``use_flow_sigmas=True``, gives a flow model: the SDE is ``rectified_flow(shift)``
    (x_t = (1 - sigma) x0 + sigma eps with sigma = s(t) = a t / (1 + (a - 1) t), a = the
    config's ``shift`` / ``flow_shift``, or with ``use_dynamic_shifting`` e^mu from ``mu``,
    which is then required), the network's output is the velocity u = eps - x0
    (``score_from_flow``; DPMSolver/UniPC: their ``prediction_type``) and its label is
    diffusers' timestep sigma N (``FlowTimestep``); ``FlowMatchNet`` wraps the network as a
    function of our t (the velocity scaled by d sigma/dt). ``invert_sigmas`` (sigma 0 = noise,
    1 = data) labels with (1 - sigma) N and negates the output. Grid-only keys (``shift_terminal``,
    Karras/exponential/beta sigmas, ``stochastic_sampling``) change where and how diffusers
    steps, not the model: take the grid with ``time_grid_from_scheduler``.

    Raises a ValueError naming the scheduler class or key for a config it does not understand
    (``check_scheduler_config``).
    """
    if not callable(model):
        raise TypeError("model must be callable as model(x, timesteps, **condition)")
    config = _config(scheduler_or_config)
    cls = check_scheduler_config(config, scheduler_class(scheduler_or_config))
    if not isinstance(fractional_timesteps, bool):
        raise TypeError(f"fractional_timesteps must be True or False, got {fractional_timesteps!r}")
    size = tuple(shape) if shape is not None else _sample_shape(model)
    if cls in FLOW_MATCH_SCHEDULERS or config.get("use_flow_sigmas", False):
        if fractional_timesteps:
            raise ValueError(
                "fractional_timesteps applies to DDPM tables; a flow model's labels are "
                "sigma N already"
            )
        return _flow_spec(model, config, cls, size, apply_x0_correction, mu)
    if mu is not None:
        raise ValueError("mu is used only by flow-matching configs with use_dynamic_shifting")
    kind = config.get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type {kind!r} is not supported; known: {', '.join(PREDICTION_TYPES)}"
        )
    if fractional_timesteps and config.get("interpolation_type", "linear") != "linear":
        raise ValueError(
            f"interpolation_type={config['interpolation_type']!r} is not supported with "
            "fractional_timesteps=True: InterpolatedDiscreteSchedule follows 'linear'"
        )
    if config.get("rescale_betas_zero_snr", False) and kind == "epsilon":
        raise ValueError(
            "rescale_betas_zero_snr=True with prediction_type='epsilon': the table ends at "
            "alpha_bar = 0, where x0 = (x - s eps) / m is undefined, so an eps-network cannot "
            "be sampled from there (Lin et al. 2024 train with v_prediction); use a "
            "v_prediction or sample model"
        )
    schedule = _table(config, cls)
    n = schedule.num_timesteps
    if fractional_timesteps:
        schedule = InterpolatedDiscreteSchedule(schedule.betas)
    sde = VPSDE(schedule)
    label = fractional_timestep(n) if fractional_timesteps else discrete_index(n)
    score = Score(DiffusersNet(model), sde, PREDICTION_TYPES[kind], label)
    if apply_x0_correction:
        score = score.with_x0_correction(x0_correction_from_config(config))
    return ModelSpec(score, sde, size)


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


def time_grid_from_flow_sigmas(sde: SDE, sigmas: Tensor | list[float]) -> Tensor:
    """Evaluation times with s(t) = sigma on a flow path (m = 1 - s, ``rectified_flow``), for
    a decreasing flow-sigma schedule in (0, 1] (diffusers' FlowMatch ``sigmas``; a trailing 0
    is dropped): t = t_from_log_snr(2 log((1 - sigma) / sigma)), sigma = 1 at T. Float64."""
    sig = torch.as_tensor(sigmas, dtype=torch.float64).detach().cpu().flatten()
    if sig.numel() > 1 and float(sig[-1]) == 0.0:
        sig = sig[:-1]
    if sig.numel() < 1 or not bool(((sig > 0) & (sig <= 1)).all()):
        raise ValueError(f"sigmas must lie in (0, 1] (a final 0 is dropped), got {sig.tolist()}")
    t = sde.t_from_log_snr(2 * (torch.log1p(-sig) - torch.log(sig))).clamp(0.0, sde.T)
    m, s = sde.marginal(t)
    on_path = torch.allclose(s, sig, rtol=1e-9, atol=1e-12)
    if not (on_path and torch.allclose(m + s, torch.ones_like(s), rtol=0, atol=1e-12)):
        raise ValueError(
            f"sde must be a flow path with m = 1 - s (rectified_flow(shift)), got {sde!r}"
        )
    return t


def time_grid_from_scheduler(scheduler: Any, sde: SDE) -> Tensor:
    """The times at which ``scheduler`` (after ``set_timesteps``) evaluates the network, on
    ``sde``'s time axis (from_diffusers' SDE), for ``sample(time_grid=..., steps=None)``.

    Flow schedulers (FlowMatch, DPMSolverMultistep / UniPC with flow sigmas): their
    ``sigmas`` at the evaluations (FlowMatchHeun's repeats dropped; ``invert_sigmas``
    undone: sigma = 1 - r), placed by ``time_grid_from_flow_sigmas``. DDPM-table schedulers:
    ``time_grid_from_timesteps`` on their timesteps (repeats dropped), fractional when the
    SDE's schedule is ``InterpolatedDiscreteSchedule``.
    """
    config = _config(scheduler)
    timesteps = getattr(scheduler, "timesteps", None)
    flow = is_flow_config(scheduler)
    if timesteps is None or (flow and getattr(scheduler, "sigmas", None) is None):
        raise ValueError("scheduler must be a diffusers scheduler after set_timesteps(n)")
    if flow:
        sig = torch.as_tensor(scheduler.sigmas, dtype=torch.float64).flatten()[: len(timesteps)]
        if config.get("invert_sigmas", False):
            sig = 1 - sig
        return time_grid_from_flow_sigmas(sde, torch.unique_consecutive(sig))
    fractional = isinstance(getattr(sde, "schedule", None), InterpolatedDiscreteSchedule)
    tau = torch.unique_consecutive(torch.as_tensor(timesteps))
    n = int(config.get("num_train_timesteps", 1000))
    return time_grid_from_timesteps(tau, n, fractional_timesteps=fractional)


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
