"""Fixtures shared by the whole suite: the SDE list, the adaptive solvers, the noise floors of
the analytic targets, and the tiny UNet and noise of the interop and parity tests (each
computed once per session).

The tests in tests/solvers/ and tests/parity/ import the plain modules of tests/ by name
(``from conftest import ADAPTIVE``, ``from reference_samplers import tiny_unet``): pytest's
default "prepend" import mode puts this folder on sys.path when it loads this file, and the
line below says so explicitly.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde import metrics
from scoresde.evaluation.targets import mixture_2d, mixture_8d

sys.path.insert(0, str(Path(__file__).parent))


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


@pytest.fixture(scope="session")
def median_floors(noise_floor):
    """{"2d", "8d"}: (mixture, reference, floor) at n = 3000, the median over 5 exact pairs; for
    the sub-VP/VE target test of every solver and the predictor-corrector options."""
    return {short: noise_floor(f"gmm{short}", 3000, 5, "median") for short in ("2d", "8d")}


@pytest.fixture(scope="session")
def unet():
    """The tiny random diffusers UNet of the interop and parity tests (skips without diffusers)."""
    from reference_samplers import tiny_unet

    return tiny_unet()


@pytest.fixture(scope="session")
def noise():
    """The parity tests' shared start z_T and noise draws, (B, 2, 8, 8) in float64, seed 1."""
    from reference_samplers import B, N

    g = torch.Generator().manual_seed(1)
    z_T = torch.randn(B, 2, 8, 8, generator=g, dtype=torch.float64)
    draws = [torch.randn(B, 2, 8, 8, generator=g, dtype=torch.float64) for _ in range(2 * N)]
    return z_T, draws
