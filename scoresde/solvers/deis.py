"""DEIS (Zhang & Chen 2023, arXiv:2204.13902): multistep exponential integration in rho.

With rho = s(t) / m(t) (= e^-lambda) the probability-flow ODE in noise prediction becomes
d(x / m) = eps d rho, so from s to t

    x_t = (m_t / m_s) x_s + m_t integral_(rho_s)^(rho_t) eps d rho.

DEIS replaces eps by its Lagrange interpolant through the last q predictions, in a chosen
variable u, and integrates each basis polynomial exactly (up to quadrature):

    x_t = (m_t / m_s) x_s + m_t sum_j C_j eps_j,   C_j = integral_(rho_s)^(rho_t) l_j(u(rho)) d rho.

``basis="log_rho"`` interpolates in u = log rho = -lambda: diffusers' ``DEISMultistepScheduler``
(its closed-form ``ind_fn``), the same polynomial as multistep DPM-Solver's in lambda, so the
two methods coincide step for step (a test checks it). ``basis="t"`` interpolates in t: the
paper's tAB-DEIS, its recommended variant. The integrals are Gauss-Legendre sums in
v = log rho (d rho = e^v dv); with 32 nodes they are exact to rounding for these smooth
integrands. Warm-up and ``lower_order_final`` follow diffusers (and DPM-Solver's reference
code): with fewer than 15 steps the last exponential step is first order, the one before it
at most second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from scoresde.core.sde import SDE
from scoresde.solvers.base import Run
from scoresde.solvers.dpm_solver import ExponentialMultistep
from scoresde.solvers.exponential_toolkit import LambdaGrid
from scoresde.solvers.plan_scalars import Scalar, is_traced

BASES = ("log_rho", "t")
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(32)
_NODES_T, _WEIGHTS_T = torch.from_numpy(_NODES), torch.from_numpy(_WEIGHTS)


@dataclass(frozen=True)
class RhoGrid(LambdaGrid):
    """The lambda grid plus the interpolation variable u at each grid point (u = -lambda for
    the log-rho basis, u = t for the t basis) and the SDE (for t(rho))."""

    u: list[float]
    sde: SDE


class DEIS(ExponentialMultistep):
    """Multistep DEIS of order 1..3 in noise prediction, with a log-rho or t polynomial basis."""

    name = "deis"
    family = "exponential"
    prediction = "eps"

    def __init__(
        self,
        order: int = 2,
        basis: str = "log_rho",
        lower_order_final: bool = True,
        afs: bool = False,
    ):
        super().__init__(order, lower_order_final, afs=afs)
        if basis not in BASES:
            raise ValueError(f"basis must be one of {', '.join(BASES)}, got {basis!r}")
        self.basis = basis

    def lambda_grid(self, run: Run) -> RhoGrid:
        g = LambdaGrid.of(run.sde, run.grid)
        u = run.grid.tolist() if self.basis == "t" else [-lam for lam in g.lam]
        return RhoGrid(g.alpha, g.sigma, g.lam, u, run.sde)

    @property
    def differentiable_grid(self) -> bool:  # type: ignore[override]
        """The log-rho basis is written in plan scalars; the t basis reads t(rho) through
        the SDE's log-SNR inverse, which need not be differentiable."""
        return self.basis == "log_rho"

    def coefficients(self, g: RhoGrid, k: int, q: int) -> tuple[Scalar, list[Scalar]]:
        v_s, v_t = -g.lam[k], -g.lam[k + 1]  # log rho at both ends
        traced = is_traced(v_s, v_t)  # the plan is differentiated: torch, else numpy
        lib, nodes01, quad = (torch, _NODES_T, _WEIGHTS_T) if traced else (np, _NODES, _WEIGHTS)
        half = 0.5 * (v_t - v_s)
        v = v_s + half * (nodes01 + 1)
        if self.basis == "log_rho":
            u = v
        else:  # t(rho) through the SDE's log-SNR inverse, log SNR = -2 log rho
            lsnr = torch.as_tensor(-2 * v, dtype=torch.float64)
            u = g.sde.t_from_log_snr(lsnr).numpy()
        nodes = [g.u[k - j] for j in range(q)]
        dv = half * quad * lib.exp(v)  # d rho = e^v dv
        weights = []
        for j in range(q):
            basis = lib.ones_like(u)
            for i in range(q):
                if i != j:
                    basis = basis * (u - nodes[i]) / (nodes[j] - nodes[i])
            integral = basis @ dv
            weights.append(g.alpha[k + 1] * (integral if traced else float(integral)))
        return g.alpha[k + 1] / g.alpha[k], weights

    def describe(self) -> str:
        return f"{self.name}(order={self.order}, {self.basis}{', afs' if self.afs else ''})"
