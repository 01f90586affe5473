"""The analytic first step (afs=True) of the few-NFE multistep solvers: one evaluation saved,
the prediction at T taken as that of zero-mean, unit-variance data."""

import math

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.evaluation.targets import GaussianMixture

UNIT = GaussianMixture([1.0], [[0.0, 0.0]], [[1.0, 1.0]])  # AFS's prediction is exact here
SOLVERS = [("dpm_solver++", {"order": 3}), ("dpm_solver", {"order": 2}), ("deis", {}),
           ("ipndm", {}), ("unipc", {})]  # fmt: skip


@pytest.mark.parametrize(("name", "options"), SOLVERS)
def test_afs_saves_one_evaluation_and_changes_the_samples_only_by_its_error_at_T(name, options):
    sde = sd.VPSDE()
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    plain = sd.sample(UNIT.exact_score(sde), sde, x_T=x_T, steps=8,
                      solver=sd.solvers.get(name, **options))  # fmt: skip
    afs = sd.solvers.get(name, afs=True, **options)
    fast = sd.sample(UNIT.exact_score(sde), sde, x_T=x_T, steps=8, solver=afs)
    assert (plain.nfe, fast.nfe) == (8, 7) and afs.planned_nfe(8) == 7
    assert "afs" in afs.describe()
    # exact eps at T is s_T x_T (m_T^2 + s_T^2 = 1), AFS takes x_T: 1 - s_T = 2e-5 at T,
    # carried through the run (measured below 2e-3)
    torch.testing.assert_close(fast.samples, plain.samples, rtol=0, atol=5e-3)


def test_afs_does_not_change_the_order():
    # N(0, 0.5 I) data: the AFS prediction is off by O(m_T^2) at T, negligible for VP
    data = GaussianMixture([1.0], [[0.0, 0.0]], [[0.5, 0.5]])
    sde, steps = sd.VPSDE(), [20, 40, 80, 160]
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errs = []
    for n in steps:
        states = {}
        sol = sd.sample(data.exact_score(sde), sde, x_T=x_T, steps=n, time_grid="logsnr",
                        solver=sd.solvers.get("dpm_solver++", order=3, afs=True),
                        callback=lambda k, t, x, s=states: s.__setitem__(k, x.clone()))  # fmt: skip
        m_e, s_e = (float(c) for c in sde.marginal(sol.times[-2]))
        m_T, s_T = (float(c) for c in sde.marginal(torch.tensor(1.0, dtype=torch.float64)))
        exact = x_T * math.sqrt((m_e**2 * 0.5 + s_e**2) / (m_T**2 * 0.5 + s_T**2))
        errs.append(float((states[n - 2] - exact).pow(2).mean().sqrt()))
    assert -np.polyfit(np.log(steps), np.log(errs), 1)[0] > 2.5


def test_afs_is_checked():
    with pytest.raises(TypeError, match="afs"):
        sd.solvers.get("dpm_solver++", afs="yes")
