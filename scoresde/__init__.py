"""scoresde: sample score-based diffusion models by integrating continuous-time SDEs and ODEs."""

from scoresde import evaluation, solvers
from scoresde.core import ddpm, grids, ode, schedules
from scoresde.core.adapters import (
    Score,
    continuous_time,
    discrete_index,
    eps_from_score,
    scaled_time,
    score_from_eps,
    score_from_flow,
    score_from_v,
    score_from_x0,
    x0_from_score,
)
from scoresde.core.brownian_memory import BrownianMemory
from scoresde.core.gaussian_path import GaussianPath, cosine_path, rectified_flow, shifted
from scoresde.core.grids import make_time_grid
from scoresde.core.guidance import ClassifierFreeGuidance, guidance_interval
from scoresde.core.noise import BrownianNoise, GaussianNoise
from scoresde.core.schedules import (
    CosineSchedule,
    DiscreteSchedule,
    LinearSchedule,
    LogAlphaBarSchedule,
    NoiseSchedule,
    rescale_zero_terminal_snr,
)
from scoresde.core.sde import SDE, VESDE, VPSDE, SubVPSDE
from scoresde.core.x0_correction import clip_x0, dynamic_threshold
from scoresde.evaluation import compare, metrics, targets
from scoresde.evaluation.grid_search import tune_grid
from scoresde.evaluation.tuned_grid import TunedGrid
from scoresde.likelihood import (
    LikelihoodResult,
    bits_per_dim,
    decode,
    dequantize,
    encode,
    log_likelihood,
)
from scoresde.models import ModelSpec, load_model
from scoresde.models.check import ModelCheck, ModelCheckWarning, check_model
from scoresde.models.interop import (
    from_diffusers,
    from_k_diffusion,
    time_grid_from_flow_sigmas,
    time_grid_from_scheduler,
    time_grid_from_sigmas,
    time_grid_from_timesteps,
)
from scoresde.sample import NonFiniteSampleError, Solution, sample
from scoresde.training import TrainingData, TrainSettings, denoising_loss, train

__version__ = "0.1.0"

__all__ = [
    "SDE",
    "VESDE",
    "VPSDE",
    "BrownianMemory",
    "BrownianNoise",
    "ClassifierFreeGuidance",
    "CosineSchedule",
    "DiscreteSchedule",
    "GaussianNoise",
    "GaussianPath",
    "LikelihoodResult",
    "LinearSchedule",
    "LogAlphaBarSchedule",
    "ModelCheck",
    "ModelCheckWarning",
    "ModelSpec",
    "NoiseSchedule",
    "NonFiniteSampleError",
    "Score",
    "Solution",
    "SubVPSDE",
    "TrainSettings",
    "TrainingData",
    "TunedGrid",
    "bits_per_dim",
    "check_model",
    "clip_x0",
    "compare",
    "continuous_time",
    "cosine_path",
    "ddpm",
    "decode",
    "denoising_loss",
    "dequantize",
    "discrete_index",
    "dynamic_threshold",
    "encode",
    "eps_from_score",
    "evaluation",
    "from_diffusers",
    "from_k_diffusion",
    "grids",
    "guidance_interval",
    "load_model",
    "log_likelihood",
    "make_time_grid",
    "metrics",
    "ode",
    "rectified_flow",
    "rescale_zero_terminal_snr",
    "sample",
    "scaled_time",
    "schedules",
    "score_from_eps",
    "score_from_flow",
    "score_from_v",
    "score_from_x0",
    "shifted",
    "solvers",
    "targets",
    "time_grid_from_flow_sigmas",
    "time_grid_from_scheduler",
    "time_grid_from_sigmas",
    "time_grid_from_timesteps",
    "train",
    "tune_grid",
    "x0_from_score",
]
