"""Fixtures shared by the whole suite: the SDE list, the adaptive solvers, the closed-form
score of Gaussian data, the noise floors of the analytic targets, and the tiny UNet and noise
of the interop and parity tests (each computed once per session). The mixtures' own exact
scores come from ``GaussianMixture.exact_score(sde)``.

The tests in tests/solvers/ and tests/parity/ import the plain modules of tests/ by name
(``from conftest import ADAPTIVE``, ``from reference_samplers import tiny_unet``): pytest's
default "prepend" import mode puts this folder on sys.path when it loads this file, and the
line below says so explicitly.
"""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde import metrics
from scoresde.evaluation.targets import TARGETS

sys.path.insert(0, str(Path(__file__).parent))

# Under pytest-xdist (the README's command runs one worker per core) each worker computes with
# one thread: two workers with torch's default two threads each would share two cores and
# thrash. Tests that spawn processes set OMP_NUM_THREADS=1 for them likewise.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


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

V = 0.5  # variance of the Gaussian data N(0, V I) of the closed-form tests


def gaussian_score(sde, var=V):
    """Exact score of p_t for data N(0, var I), p_t = N(0, (m^2 var + s^2) I):
    -x / (m^2 var + s^2)."""

    def score(x, t):
        m, s = sde.marginal(t)
        return -x / (m * m * var + s * s).reshape(-1, *([1] * (x.dim() - 1)))

    return score


def gaussian(sde, var=V):
    """(score, v): the exact score for data N(0, var I) and v(t) = m_t^2 var + s_t^2 (a float,
    for a float t)."""

    def v(t):
        m, s = sde.marginal(torch.tensor(t, dtype=torch.float64))
        return float(m * m * var + s * s)

    return gaussian_score(sde, var), v


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
            g = TARGETS[target]()
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
