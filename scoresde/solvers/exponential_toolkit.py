"""The toolkit of exponential integrators in log-SNR time, shared by the solvers built on it
(DPM-Solver and DPM-Solver++ in ``dpm_solver`` and ``dpm_solver_singlestep``, SDE-DPM-Solver++
in ``sde_dpm_solver``, UniPC, DEIS) and, for its ``Predictor``, by EDM's Heun and the ancestral
samplers.

Write alpha = m(t), sigma = s(t) for the marginal x_t = alpha x_0 + sigma noise and
lambda = log(alpha / sigma) (half the log-SNR). In lambda the probability-flow ODE has an
exactly integrable linear part (Lu et al. 2022, "DPM-Solver", eqs. 3.4-3.6): from s to t with
h = lambda_t - lambda_s,

    noise prediction eps:  x_t = (alpha_t/alpha_s) x_s - sigma_t * integral_0^h e^(h-u) eps du
    data prediction x0:    x_t = (sigma_t/sigma_s) x_s + alpha_t * integral_0^h e^(u-h) x0 du

(Lu et al. 2022b, "DPM-Solver++", eq. 9). Expanding the prediction in a Taylor series in
lambda, f(lambda_s + u) = sum_k u^k/k! f^(k), the integrals are phi-functions:

    eps:  x_t = (alpha_t/alpha_s) x_s - sigma_t sum_k h^(k+1) phi_(k+1)(h)  f^(k)
    x0:   x_t = (sigma_t/sigma_s) x_s + alpha_t sum_k h^(k+1) phi_(k+1)(-h) f^(k)

with phi_1(z) = (e^z - 1)/z, phi_2(z) = (e^z - 1 - z)/z^2, phi_3(z) = (e^z - 1 - z - z^2/2)/z^3.
Order 1 is DDIM (Song et al. 2021). Multistep methods estimate f', f'' from the predictions at
previous grid points by polynomial interpolation in lambda (the "Taylor" variant of the
DPM-Solver++ paper, App. B; ``taylor_weights``); singlestep methods evaluate at intermediate
lambdas (DPM-Solver-2 and -3, Lu et al. 2022 Algorithms 1 and 2).

These work for every SDE here (VP, sub-VP, VE: only m and s enter). The last step eps -> 0
is Tweedie's denoiser by default. With ``denoise=False`` it is the method's own first-order
step to t = 0 (``LambdaGrid.first_order``), written so that it stays finite when sigma_0 = 0
(lambda = infinity), with e^(-h) = (alpha_s sigma_t)/(alpha_t sigma_s):

    x0:   x_0 = (sigma_0/sigma_s) x_s + alpha_0 (1 - e^(-h)) D_s
    eps:  x_0 = (alpha_0/alpha_s) x_s - (alpha_0 sigma_s/alpha_s) (1 - e^(-h)) eps_s

On VP (sigma_0 = 0, alpha_0 = 1) both equal the denoiser; on VE, where s(0) = sigma_min > 0,
they end at the sigma_min-noisy x(0) of Song et al.'s convention.

A plan (what ``prepare`` returns) keeps its run's constants (a ``LambdaGrid``, a ``Predictor``)
apart from its mutable state: a multistep method's ``History`` of past predictions is the one
object its ``step`` updates (``MultistepPlan``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from scoresde.core.checks import check_positive_int
from scoresde.core.sde import SDE
from scoresde.solvers.base import Run, affine
from scoresde.solvers.plan_scalars import Scalar, expm1, inverse, is_traced, matrix, scalars, value

SOLVER_TYPES = ("taylor", "heun", "midpoint")


def check_order(order: int, highest: int) -> int:
    """``order`` as an int in 1 .. ``highest`` (2 or 3), else a ValueError naming the choices."""
    order = check_positive_int("order", order)
    if order > highest:
        allowed = "1 or 2" if highest == 2 else "1, 2 or 3"
        raise ValueError(f"order must be {allowed}, got {order}")
    return order


def check_afs(afs: bool) -> bool:
    """``afs`` (the analytic first step) as a bool, else a TypeError."""
    if not isinstance(afs, bool):
        raise TypeError(f"afs must be True or False, got {afs!r}")
    return afs


def analytic_first_prediction(kind: str, x: Tensor, alpha: Scalar, sigma: Scalar) -> Tensor:
    """The analytic first step (AFS; Dockhorn et al. 2022, diff-sampler's ``afs``): at T the
    prediction of data with zero mean and unit variance, eps = x / sqrt(alpha^2 + sigma^2),
    in place of a network call; as x0: (x - sigma eps) / alpha."""
    eps = x.mul(1.0 / (alpha * alpha + sigma * sigma) ** 0.5)
    if kind == "eps":
        return eps
    return affine(x, eps, 1.0 / alpha, -sigma / alpha)


def check_eta(eta: float) -> float:
    """eta, the share of the posterior std an ancestral/DDIM step adds, as a float in [0, 1]."""
    eta = float(eta)
    if not (math.isfinite(eta) and 0.0 <= eta <= 1.0):
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    return eta


def check_solver_type(solver_type: str) -> str:
    """``solver_type``, one of ``SOLVER_TYPES`` ("taylor", "heun", "midpoint"; see
    ``library_weights``), else a ValueError."""
    if solver_type not in SOLVER_TYPES:
        raise ValueError(
            f"solver_type must be one of {', '.join(SOLVER_TYPES)}, got {solver_type!r}"
        )
    return solver_type


def phi(k: int, z: Scalar) -> Scalar:
    """phi_k(z) = (e^z - sum_{j<k} z^j/j!) / z^k, by its series for small |z| (no cancellation)."""
    if abs(value(z)) < 0.1:
        return sum(z**j / math.factorial(j + k) for j in range(14))
    rest = expm1(z) - sum(z**j / math.factorial(j) for j in range(1, k))
    return rest / z**k


def taylor_weights(lams: list[Scalar], orders: int) -> Any:
    """W with f^(k)(lams[0]) ~ sum_j W[k, j] f(lams[j]) for k < ``orders`` = len(lams)
    (numpy, or a float64 tensor for traced plan scalars).

    The interpolating polynomial through (lams[j], f_j) is written as sum_k c_k u^k/k! with
    u = lambda - lams[0]; its Vandermonde system V c = f gives W = V^-1.
    """
    u = [lam - lams[0] for lam in lams]
    return inverse(matrix([[uj**k / math.factorial(k) for k in range(orders)] for uj in u]))


def library_weights(c: list[Scalar], h: Scalar, solver_type: str) -> list[Scalar]:
    """Taylor weights c (on f, f', f'') turned into diffusers'/k-diffusion's conventions.

    Both libraries write the update with D1 = h f' and D2 = h^2 f'' / 2 (the derivatives of
    the same interpolating polynomial) and give D2 the weight c_2 / h^2, half the Taylor
    weight 2 c_2 / h^2: their third-order steps keep half of the f'' term (c_2 -> c_2 / 2).
    "midpoint" at second order weights D1 with half the first-order weight, c_0 / 2, i.e.
    c_1 = c_0 h / 2 (Lu et al. 2022b, eq. 15's midpoint variant); "heun" keeps the Taylor
    weight c_1 there.
    """
    c = list(c)
    if len(c) == 3:
        c[2] /= 2
    elif len(c) == 2 and solver_type == "midpoint":
        c[1] = 0.5 * c[0] * h
    return c


def combine(x: Tensor, cx: Scalar, terms: list[tuple[Scalar, Tensor]]) -> Tensor:
    """cx x + sum_i w_i f_i for ``terms`` = [(w_i, f_i)], into a new tensor (inputs unchanged);
    out of place when a weight is a traced plan scalar."""
    if is_traced(cx, *(w for w, _ in terms)):
        out = x * cx
        for w, f in terms:
            out = out + f * w
        return out
    out = x.mul(cx)
    for w, f in terms:
        out.add_(f, alpha=w)
    return out


@dataclass(frozen=True)
class LambdaGrid:
    """alpha_k = m(t_k), sigma_k = s(t_k) and lambda_k = log(alpha_k / sigma_k) (host plan
    scalars, ``plan_scalars``) for the grid points t_0 .. t_N; lambda_N is inf where
    sigma_N = 0. Constants of a run."""

    alpha: list[Scalar]
    sigma: list[Scalar]
    lam: list[Scalar]

    @classmethod
    def of(cls, sde: SDE, times: Tensor) -> LambdaGrid:
        """The grid of ``sde`` at ``times``: (m, s, log(m / s)) in float64."""
        m, s = sde.marginal(times)
        return cls(scalars(m), scalars(s), scalars(torch.log(m / s)))

    def first_order(self, kind: str, k: int) -> tuple[Scalar, Scalar]:
        """(c_x, c_f) of the first-order step k -> k+1, x_(k+1) = c_x x_k + c_f f_k, finite also
        for sigma_(k+1) = 0 (module doc): with 1 - e^(-h) = -expm1(lambda_k - lambda_(k+1)),
        "x0": (sigma_t / sigma_s, alpha_t (1 - e^(-h))), "eps": (alpha_t / alpha_s,
        -(alpha_t sigma_s / alpha_s) (1 - e^(-h)))."""
        one_m = -expm1(self.lam[k] - self.lam[k + 1])  # 1 - e^(-h)
        a_s, s_s, a_t, s_t = self.alpha[k], self.sigma[k], self.alpha[k + 1], self.sigma[k + 1]
        if kind == "x0":
            return s_t / s_s, a_t * one_m
        return a_t / a_s, -(a_t * s_s / a_s) * one_m


class Predictor:
    """eps or x0 predictions from the counted score (or the raw eps of an eps-adapter):
    eps = -sigma score, x0 = (x + sigma^2 score) / alpha = (x - sigma eps) / alpha."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.fast = getattr(run.score, "eps_min_std", None) is not None

    def eps(self, x: Tensor, t: Tensor, sigma: Scalar) -> Tensor:
        """eps(x, t) = -sigma score(x, t), or the adapter's raw eps."""
        if self.fast:
            return self.run.score.eps(x, t)
        return self.run.score(x, t).mul(-sigma)

    def x0(self, x: Tensor, t: Tensor, alpha: Scalar, sigma: Scalar) -> Tensor:
        """x0(x, t) = (x + sigma^2 score(x, t)) / alpha, or (x - sigma eps) / alpha."""
        if self.fast:  # x0 = (x - sigma eps) / alpha
            return affine(x, self.run.score.eps(x, t), 1 / alpha, -sigma / alpha)
        return affine(x, self.run.score(x, t), 1 / alpha, sigma * sigma / alpha)

    def __call__(self, kind: str, x: Tensor, t: Tensor, alpha: Scalar, sigma: Scalar) -> Tensor:
        """The ``kind`` ("eps" or "x0") prediction."""
        return self.eps(x, t, sigma) if kind == "eps" else self.x0(x, t, alpha, sigma)


@dataclass
class History:
    """A run's mutable state for a multistep method: its last ``size`` predictions f_k,
    f_(k-1), ..., newest first. ``prepare`` creates it empty; each ``step`` pushes one."""

    size: int
    items: list[Tensor] = field(default_factory=list)

    def push(self, f: Tensor) -> None:
        """[f, f_k, f_(k-1), ...] keeping the newest ``size``."""
        self.items = [f, *self.items[: self.size - 1]]

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class MultistepPlan:
    """A multistep run: its constants (the grid, the predictor) and its mutable ``history``."""

    grid: LambdaGrid
    predict: Predictor
    history: History  # the run's state: updated by every step

    @classmethod
    def of(cls, run: Run, grid: LambdaGrid, size: int) -> MultistepPlan:
        """The plan on ``grid`` with an empty history of ``size`` predictions."""
        return cls(grid, Predictor(run), History(size))
