"""Fixtures shared by the whole suite: the SDE list, the adaptive solvers, and the noise
floors of the analytic targets (computed once per session)."""

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde import metrics
from scoresde.evaluation.targets import mixture_2d, mixture_8d


@pytest.fixture(autouse=True)
def _float32_default():
    torch.set_default_dtype(torch.float32)
    yield


ALL_SDES = {
    "vp_linear": lambda: sd.VPSDE(sd.LinearSchedule()),
    "vp_cosine": lambda: sd.VPSDE(sd.CosineSchedule()),
    "vp_discrete": lambda: sd.VPSDE(sd.DiscreteSchedule.linear()),
    "subvp": lambda: sd.SubVPSDE(sd.LinearSchedule()),
    "ve": lambda: sd.VESDE(),
}


@pytest.fixture(params=sorted(ALL_SDES))
def any_sde(request):
    return ALL_SDES[request.param]()


# solvers whose cost is not planned (they take tolerances, not steps), from their own flag
ADAPTIVE = frozenset(n for n in sd.solvers.available() if sd.solvers.get(n).adaptive)
MIXTURES = {"gmm2d": mixture_2d, "gmm8d": mixture_8d}


@pytest.fixture(scope="session")
def noise_floor():
    """noise_floor(target, n, pairs, stat) -> (mixture, reference sample, floor): the SW1
    between ``pairs`` independent exact samples of n points (seeds 200 + i) and a reference
    sample (seed 101), reduced by ``stat`` ("mean" or "median"). Cached for the session, so
    test files that need the same floor share one computation."""
    cache = {}

    def get(target: str, n: int, pairs: int, stat: str):
        key = (target, n, pairs, stat)
        if key not in cache:
            g = MIXTURES[target]()
            ref = g.sample(n, torch.Generator().manual_seed(101))
            draws = [g.sample(n, torch.Generator().manual_seed(200 + i)) for i in range(pairs)]
            values = [metrics.sliced_wasserstein(p, ref) for p in draws]
            cache[key] = (g, ref, float(getattr(np, stat)(values)))
        return cache[key]

    return get
