"""Training score models: the denoising loss of every parameterisation, weighting and time
proposal (``denoising_loss``), and the trainer that writes a model directory."""

from scoresde.training.data import TrainingData
from scoresde.training.losses import TRAIN_PREDICTIONS, denoising_loss, prediction_factor
from scoresde.training.time_samplers import (
    T_SAMPLERS,
    Discrete,
    Importance,
    LogitNormal,
    LogNormal,
    TimeSampler,
    Uniform,
)
from scoresde.training.trainer import RECIPES, TrainResult, TrainSettings, train
from scoresde.training.weightings import (
    WEIGHTINGS,
    EDMWeight,
    Likelihood,
    MinSNR,
    Sigma2,
    Simple,
    Weighting,
)

__all__ = [
    "RECIPES",
    "TRAIN_PREDICTIONS",
    "T_SAMPLERS",
    "WEIGHTINGS",
    "Discrete",
    "EDMWeight",
    "Importance",
    "Likelihood",
    "LogNormal",
    "LogitNormal",
    "MinSNR",
    "Sigma2",
    "Simple",
    "TimeSampler",
    "TrainResult",
    "TrainSettings",
    "TrainingData",
    "Uniform",
    "Weighting",
    "denoising_loss",
    "prediction_factor",
    "train",
]
