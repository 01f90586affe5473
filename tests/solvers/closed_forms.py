"""Closed forms shared by the solver tests, and noise sources that record or fix the draws.

Gaussian data N(0, V I) has p_t = N(0, (m_t^2 V + s_t^2) I): the score is -x / (m^2 V + s^2)
(``gaussian_score`` and ``gaussian`` in tests/conftest.py, with V) and the probability-flow ODE
is solved exactly, so a solver's error is known to the last digit.
"""

import numpy as np
import torch
from conftest import V, gaussian_score

import scoresde as sd
from scoresde.core.noise import GaussianNoise


# On a grid uniform in lambda the multistep methods super-converge on this problem (measured
# slope 3.9-4.2 for order 3), so the order is measured on the quadratic grid, which is not.
def endpoint_error(sde, solver, steps, grid="quadratic"):
    """RMS error at eps against x_eps = x_T sqrt((m_e^2 V + s_e^2) / (m_T^2 V + s_T^2))."""
    gen = torch.Generator().manual_seed(0)
    x_T = torch.randn(256, 2, generator=gen, dtype=torch.float64)
    sol = sd.sample(gaussian_score(sde), sde, x_T=x_T, solver=solver, steps=steps,
                    time_grid=grid, return_trajectory=True)  # fmt: skip
    m_T, s_T = sde.marginal(torch.tensor(sde.T, dtype=torch.float64))
    m_e, s_e = sde.marginal(sol.times[-2])
    exact = x_T * torch.sqrt((m_e**2 * V + s_e**2) / (m_T**2 * V + s_T**2))
    return float((sol.trajectory[-2] - exact).pow(2).mean().sqrt())


def slope(steps, errors):
    """-d log(error) / d log(steps), fitted over the step counts."""
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


def slope_in_intervals(steps, errs):
    """The same against steps - 1 (the convergence-order tests' convention)."""
    return -np.polyfit(np.log(np.asarray(steps) - 1), np.log(errs), 1)[0]


class BasisNoise:
    """Noise draw k is the unit vector on batch row k + 2 (rows 0 and 1 carry x_T = 0, 1)."""

    def __init__(self, batch: int) -> None:
        self.k, self.batch = 0, batch

    def __call__(self, t=None, t_next=None):
        z = torch.zeros(self.batch, 1, dtype=torch.float64)
        z[self.k + 2] = 1.0
        self.k += 1
        return z

    normal = __call__


def variance_error(sde, solver, steps):
    """|Var(x_eps) - (m_e^2 V + s_e^2)| for x_T ~ p_T, computed exactly.

    On the Gaussian target every solver step is affine in the state and the noise, so
    x_eps = b + a x_T + sum_k c_k z_k; one run on a batch whose rows switch on x_T or one
    draw z_k at a time gives a, b, c_k exactly, and Var(x_eps) = a^2 Var(x_T) + sum c_k^2.
    """
    batch = steps + 3
    x_T = torch.zeros(batch, 1, dtype=torch.float64)
    x_T[1] = 1.0
    sol = sd.sample(gaussian_score(sde), sde, x_T=x_T, solver=solver, steps=steps,
                    time_grid="quadratic", noise=BasisNoise(batch),
                    return_trajectory=True)  # fmt: skip
    y = sol.trajectory[-2][:, 0]
    a, c = y[1] - y[0], y[2:] - y[0]
    m_T, s_T = sde.marginal(torch.tensor(sde.T, dtype=torch.float64))
    m_e, s_e = sde.marginal(sol.times[-2])
    var = a**2 * (m_T**2 * V + s_T**2) + (c**2).sum()
    return float(abs(var - (m_e**2 * V + s_e**2)))


class RecordingNoise:
    """Gaussian noise that keeps every draw (in order) so a reference loop can replay it."""

    def __init__(self, like, seed=0):
        self.inner = GaussianNoise(like, torch.Generator().manual_seed(seed))
        self.draws = []

    def __call__(self, t, t_next):
        self.draws.append(self.inner(t, t_next).clone())
        return self.draws[-1]

    def normal(self):
        self.draws.append(self.inner.normal().clone())
        return self.draws[-1]


def measured_order(name: str, options: dict, steps=(41, 81, 161)) -> tuple[float, list[float]]:
    """(the slope of log endpoint error against log steps, the errors) of solver ``name`` on
    the closed-form Gaussian flow of the linear VP SDE, over ``steps``."""
    sde = sd.VPSDE()
    solver = sd.solvers.get(name, **options)
    errs = [endpoint_error(sde, solver, n) for n in steps]
    return slope_in_intervals(list(steps), errs), errs


def measured_weak_order(
    name: str, options: dict, steps=(21, 41, 81, 161)
) -> tuple[float, list[float]]:
    """(the slope of log variance error at eps against log steps, the errors) of the
    stochastic solver ``name`` on Gaussian data under the linear VP SDE, over ``steps``."""
    sde = sd.VPSDE()
    errs = [variance_error(sde, sd.solvers.get(name, **options), n) for n in steps]
    return slope_in_intervals(list(steps), errs), errs
