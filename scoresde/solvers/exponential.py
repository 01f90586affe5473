"""Exponential integrators in log-SNR time: DDIM(eta), DPM-Solver, DPM-Solver++, SDE-DPM-Solver++.

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
DPM-Solver++ paper, App. B); singlestep methods evaluate at intermediate lambdas
(DPM-Solver-2 and -3, Lu et al. 2022 Algorithms 1 and 2 with r1 = 1/2; r1 = 1/3, r2 = 2/3).

These work for every SDE here (VP, sub-VP, VE: only m and s enter). The last step eps -> 0
is Tweedie's denoiser by default. With ``denoise=False`` it is the method's own first-order
step to t = 0, written so that it stays finite when sigma_0 = 0 (lambda = infinity), with
e^(-h) = (alpha_s sigma_t)/(alpha_t sigma_s):

    x0:   x_0 = (sigma_0/sigma_s) x_s + alpha_0 (1 - e^(-h)) D_s
    eps:  x_0 = (alpha_0/alpha_s) x_s - (alpha_0 sigma_s/alpha_s) (1 - e^(-h)) eps_s

On VP (sigma_0 = 0, alpha_0 = 1) both equal the denoiser; on VE, where s(0) = sigma_min > 0,
they end at the sigma_min-noisy x(0) of Song et al.'s convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from scoresde.checks import check_positive_int
from scoresde.sde import SDE
from scoresde.solvers.base import AffineSolver, Run, Solver, affine


def _check_order(order: int, highest: int) -> int:
    order = check_positive_int("order", order)
    if order > highest:
        allowed = "1 or 2" if highest == 2 else "1, 2 or 3"
        raise ValueError(f"order must be {allowed}, got {order}")
    return order


def check_eta(eta: float) -> float:
    """eta, the share of the posterior std an ancestral/DDIM step adds, as a float in [0, 1]."""
    eta = float(eta)
    if not (math.isfinite(eta) and 0.0 <= eta <= 1.0):
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    return eta


def phi(k: int, z: float) -> float:
    """phi_k(z) = (e^z - sum_{j<k} z^j/j!) / z^k, by its series for small |z| (no cancellation)."""
    if abs(z) < 0.1:
        return sum(z**j / math.factorial(j + k) for j in range(14))
    rest = math.expm1(z) - sum(z**j / math.factorial(j) for j in range(1, k))
    return rest / z**k


def taylor_weights(lams: list[float], orders: int) -> np.ndarray:
    """W with f^(k)(lams[0]) ~ sum_j W[k, j] f(lams[j]) for k < ``orders`` = len(lams).

    The interpolating polynomial through (lams[j], f_j) is written as sum_k c_k u^k/k! with
    u = lambda - lams[0]; its Vandermonde system V c = f gives W = V^-1.
    """
    u = np.asarray(lams, dtype=np.float64) - lams[0]
    v = np.stack([u**k / math.factorial(k) for k in range(orders)], axis=1)
    return np.linalg.inv(v)


@dataclass
class _Grid:
    """Per-grid-point alpha, sigma, lambda (host floats) for t_0..t_N (lambda_N may be inf)."""

    alpha: list[float]
    sigma: list[float]
    lam: list[float]
    history: list[tuple[float, Tensor]] = field(default_factory=list)

    @classmethod
    def of(cls, sde: SDE, times: Tensor) -> _Grid:
        m, s = sde.marginal(times)
        return cls(m.tolist(), s.tolist(), torch.log(m / s).tolist())

    def first_order(self, kind: str, k: int) -> tuple[float, float]:
        """(c_x, c_f) of the first-order step k -> k+1, finite also for sigma_{k+1} = 0."""
        one_m = -math.expm1(self.lam[k] - self.lam[k + 1])  # 1 - e^(-h)
        a_s, s_s, a_t, s_t = self.alpha[k], self.sigma[k], self.alpha[k + 1], self.sigma[k + 1]
        if kind == "x0":
            return s_t / s_s, a_t * one_m
        return a_t / a_s, -(a_t * s_s / a_s) * one_m


class _Predictor:
    """eps or x0 predictions from the counted score (or the raw eps of an eps-adapter)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.fast = getattr(run.score, "eps_min_std", None) is not None

    def eps(self, x: Tensor, t: Tensor, sigma: float) -> Tensor:
        if self.fast:
            return self.run.score.eps(x, t)
        return self.run.score(x, t).mul(-sigma)

    def x0(self, x: Tensor, t: Tensor, alpha: float, sigma: float) -> Tensor:
        if self.fast:  # x0 = (x - sigma eps) / alpha
            return affine(x, self.run.score.eps(x, t), 1 / alpha, -sigma / alpha)
        return affine(x, self.run.score(x, t), 1 / alpha, sigma * sigma / alpha)

    def __call__(self, kind: str, x: Tensor, t: Tensor, alpha: float, sigma: float) -> Tensor:
        return self.eps(x, t, sigma) if kind == "eps" else self.x0(x, t, alpha, sigma)


def _combine(x: Tensor, cx: float, terms: list[tuple[float, Tensor]]) -> Tensor:
    out = x.mul(cx)
    for w, f in terms:
        out.add_(f, alpha=w)
    return out


SOLVER_TYPES = ("taylor", "heun", "midpoint")


def _check_solver_type(solver_type: str) -> str:
    if solver_type not in SOLVER_TYPES:
        raise ValueError(
            f"solver_type must be one of {', '.join(SOLVER_TYPES)}, got {solver_type!r}"
        )
    return solver_type


def _library_weights(c: list[float], h: float, solver_type: str) -> list[float]:
    """Taylor weights c (on f, f', f'') turned into diffusers'/k-diffusion's conventions.

    Both libraries write the update with D1 = h f' and D2 = h^2 f'' / 2 (the derivatives of
    the same interpolating polynomial) and give D2 the weight c_2 / h^2, half the Taylor
    weight 2 c_2 / h^2: their third-order steps keep half of the f'' term. "midpoint" at
    second order weights D1 with half the first-order weight, c_0 / 2 (Lu et al. 2022b,
    eq. 15's midpoint variant); "heun" keeps the Taylor weight c_1 there.
    """
    c = list(c)
    if len(c) == 3:
        c[2] /= 2
    elif len(c) == 2 and solver_type == "midpoint":
        c[1] = 0.5 * c[0] * h
    return c


class _Multistep(Solver):
    """Multistep exponential integrator of order 1..3; one evaluation per step."""

    prediction = "x0"

    def __init__(
        self, order: int = 2, lower_order_final: bool = True, solver_type: str = "taylor"
    ) -> None:
        self.order = _check_order(order, 3)
        self.lower_order_final = bool(lower_order_final)
        self.solver_type = _check_solver_type(solver_type)

    def prepare(self, run: Run) -> tuple[_Grid, _Predictor]:
        return _Grid.of(run.sde, run.grid), _Predictor(run)

    def step_order(self, k: int, run: Run) -> int:
        """Warm-up from order 1; with few steps, also lower orders on the final steps.

        "taylor" (Lu et al.'s reference code): with fewer than 15 steps, the last exponential
        step is first order and the one before at most second. "heun"/"midpoint" (diffusers):
        only the step to t = 0 is first order, and the one before it at most second.
        """
        q = min(self.order, k + 1)
        exp_steps = run.steps - 1  # exponential steps T -> eps (the last step is the denoiser)
        if self.lower_order_final and run.steps < 15:
            q = min(q, exp_steps - k + (self.solver_type != "taylor"))
        return max(q, 1)

    def coefficients(self, g: _Grid, k: int, q: int) -> tuple[float, list[float]]:
        """(c_x, weights on the last q predictions, newest first) for the step k -> k+1."""
        h = g.lam[k + 1] - g.lam[k]
        lams = [g.lam[k - j] for j in range(q)]
        w = taylor_weights(lams, q)
        if self.prediction == "eps":
            cx = g.alpha[k + 1] / g.alpha[k]
            c = [-g.sigma[k + 1] * h ** (i + 1) * phi(i + 1, h) for i in range(q)]
        else:
            cx = g.sigma[k + 1] / g.sigma[k]
            c = [g.alpha[k + 1] * h ** (i + 1) * phi(i + 1, -h) for i in range(q)]
        if self.solver_type != "taylor":
            c = _library_weights(c, h, self.solver_type)
        return cx, (np.asarray(c) @ w).tolist()

    def step(self, x: Tensor, k: int, run: Run, plan) -> Tensor:
        g, predict = plan
        f = predict(self.prediction, x, run.t[k], g.alpha[k], g.sigma[k])
        g.history = [f, *g.history[: self.order - 1]]
        if run.is_last(k):  # own step to t = 0 (denoise=False): first order
            cx, cf = g.first_order(self.prediction, k)
            return _combine(x, cx, [(cf, f)])
        cx, w = self.coefficients(g, k, self.step_order(k, run))
        return _combine(x, cx, list(zip(w, g.history, strict=False)))

    def describe(self) -> str:
        kind = "" if self.solver_type == "taylor" else f", {self.solver_type}"
        return f"{self.name}(order={self.order}{kind})"


class DPMSolverPP(_Multistep):
    """DPM-Solver++ (Lu et al. 2022b, arXiv:2211.01095): multistep, data prediction, 2M / 3M.

    x_{i+1} = (sigma_{i+1}/sigma_i) x_i + alpha_{i+1} sum_k h^(k+1) phi_(k+1)(-h) D^(k), with
    D^(k) the lambda-derivatives of the x0 prediction from the last ``order`` steps. Order 1
    is DDIM; the first step warms up at order 1, and with fewer than 15 steps the last steps
    lower their order (``lower_order_final``), as recommended in the paper.

    ``solver_type``: "taylor" (default) is the expansion above. "heun" and "midpoint" are
    diffusers' ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++")`` with that
    ``solver_type`` (k-diffusion's ``sample_dpmpp_2m`` is "midpoint"), their lower-order
    rule included: "heun" equals "taylor" at second order; at third order both keep half of
    the f'' term (see ``_library_weights``).
    """

    name = "dpm_solver++"
    prediction = "x0"


class DPMSolverMultistep(_Multistep):
    """Multistep DPM-Solver (Lu et al. 2022, arXiv:2206.00927, and 2022b App. B), noise prediction.

    x_{i+1} = (alpha_{i+1}/alpha_i) x_i - sigma_{i+1} sum_k h^(k+1) phi_(k+1)(h) eps^(k).
    """

    name = "dpm_solver"
    prediction = "eps"


class DPMSolverSinglestep(Solver):
    """Singlestep DPM-Solver-1/2/3 (Lu et al. 2022, Algorithms 1-2), noise prediction.

    Order k spends k evaluations per step at intermediate lambdas (r1 = 1/2 for order 2;
    r1 = 1/3, r2 = 2/3 for order 3):

        u1 = (a_s1/a_s) x - sig_s1 (e^(r1 h) - 1) eps_s
        order 2: x_t = (a_t/a_s) x - sig_t (e^h - 1) eps_s - sig_t/(2 r1) (e^h - 1)(eps(u1) - eps_s)
        order 3: u2 = (a_s2/a_s) x - sig_s2 (e^(r2 h) - 1) eps_s
                      - (sig_s2 r2/r1) ((e^(r2 h) - 1)/(r2 h) - 1) (eps(u1) - eps_s)
                 x_t = (a_t/a_s) x - sig_t (e^h - 1) eps_s
                       - (sig_t/r2) ((e^h - 1)/h - 1) (eps(u2) - eps_s)
    """

    name = "dpm_solver_single"

    def __init__(self, order: int = 3) -> None:
        self.order = _check_order(order, 3)
        self.evals_per_step = self.order

    def planned_nfe(self, steps: int) -> int:
        return self.order * (steps - 1) + 1

    def prepare(self, run: Run):
        times = run.grid[:-1]
        lam = 0.5 * run.sde.log_snr(times)
        h = lam[1:] - lam[:-1]
        r = {1: [], 2: [0.5], 3: [1 / 3, 2 / 3]}[self.order]
        mids = []
        for ri in r:
            t_mid = run.sde.t_from_log_snr(2 * (lam[:-1] + ri * h)).clamp(run.eps, run.sde.T)
            m, s = run.sde.marginal(t_mid)
            ts = [run.t[0].new_full(run.t[0].shape, v) for v in t_mid.tolist()]
            mids.append((m.tolist(), s.tolist(), ts))
        return _Grid.of(run.sde, run.grid), _Predictor(run), h.tolist(), r, mids

    def step(self, x: Tensor, k: int, run: Run, plan) -> Tensor:
        g, predict, hs, r, mids = plan
        e_s = predict.eps(x, run.t[k], g.sigma[k])
        if run.is_last(k):  # own step to t = 0 (denoise=False): first order
            cx, ce = g.first_order("eps", k)
            return _combine(x, cx, [(ce, e_s)])
        h, a_s, a_t, sig_t = hs[k], g.alpha[k], g.alpha[k + 1], g.sigma[k + 1]
        em1 = math.expm1(h)
        if self.order == 1:
            return _combine(x, a_t / a_s, [(-sig_t * em1, e_s)])
        m1, s1, t1 = (v[k] for v in mids[0])
        u1 = _combine(x, m1 / a_s, [(-s1 * math.expm1(r[0] * h), e_s)])
        d1 = predict.eps(u1, t1, s1).sub_(e_s)
        if self.order == 2:
            return _combine(x, a_t / a_s, [(-sig_t * em1, e_s), (-sig_t / (2 * r[0]) * em1, d1)])
        m2, s2, t2 = (v[k] for v in mids[1])
        r1, r2 = r
        em2 = math.expm1(r2 * h)
        u2 = _combine(x, m2 / a_s, [(-s2 * em2, e_s), (-(s2 * r2 / r1) * (em2 / (r2 * h) - 1), d1)])
        d2 = predict.eps(u2, t2, s2).sub_(e_s)
        return _combine(x, a_t / a_s, [(-sig_t * em1, e_s), (-(sig_t / r2) * (em1 / h - 1), d2)])

    def describe(self) -> str:
        return f"{self.name}(order={self.order})"


def singlestep_blocks(steps: int, order: int) -> list[int]:
    """Block lengths of a grid-stage singlestep run: full blocks of ``order`` steps, shorter
    ones at the end (Lu et al.'s reference code and diffusers' ``get_order_list``)."""
    if order == 1:
        return [1] * steps
    full, rest = divmod(steps, order)
    if rest == 0:  # the last block is split into two lower-order ones
        return [order] * (full - 1) + ([2, 1] if order == 3 else [1, 1])
    return [order] * full + [rest]


class DPMSolverPPSinglestep(Solver):
    """Singlestep DPM-Solver++ whose stages are the grid points (diffusers'
    ``DPMSolverSinglestepScheduler``, Lu et al. 2022b), data prediction, orders 1-3.

    The grid is cut into blocks (``singlestep_blocks``); a block of length 3 starting at b
    takes its three steps as: first order b -> b+1, second order b -> b+2 from (x_b, D_b,
    D_(b+1)), third order b -> b+3 from (x_b, D_b, D_(b+1), D_(b+2)), each a Taylor step
    expanded at lambda_b, x_t = (sigma_t/sigma_b) x_b + alpha_t sum_k h^(k+1) phi_(k+1)(-h)
    D^(k), with D^(k) the derivatives of the polynomial through the block's predictions (h =
    lambda_t - lambda_b). On a grid uniform in lambda the stages sit at r = 1/2 (order 2) and
    r = 1/3, 2/3 (order 3), DPM-Solver-2/3's. One evaluation per grid step.

    ``solver_type`` "taylor" (= diffusers' "heun") is the expansion above; "midpoint" weights
    the first difference at order 2 by half the first-order weight and, at order 3, keeps
    only the newest stage (Lu et al.'s DPM-Solver-3 update, exact in order for r = 2/3).
    """

    name = "dpm_solver++_single"

    def __init__(self, order: int = 2, solver_type: str = "taylor") -> None:
        self.order = _check_order(order, 3)
        self.solver_type = "taylor" if solver_type == "heun" else _check_solver_type(solver_type)

    def prepare(self, run: Run):
        stage = [i for n in singlestep_blocks(run.steps, self.order) for i in range(n)]
        return _Grid.of(run.sde, run.grid), _Predictor(run), stage

    def step(self, x: Tensor, k: int, run: Run, plan) -> Tensor:
        g, predict, stage = plan
        d = predict.x0(x, run.t[k], g.alpha[k], g.sigma[k])
        q = stage[k] + 1  # the order of this step; its block started at k - stage[k]
        if q == 1 or run.is_last(k):
            g.history = [(x, d)]
            cx, cd = g.first_order("x0", k)
            return _combine(x, cx, [(cd, d)])
        g.history.append((x, d))
        b = k - stage[k]
        h = g.lam[k + 1] - g.lam[b]
        c = [g.alpha[k + 1] * h ** (i + 1) * phi(i + 1, -h) for i in range(q)]
        used = list(range(q))  # stages of the block the update reads
        if self.solver_type == "midpoint" and q == 3:
            used, c = [0, 2], c[:2]
        elif self.solver_type == "midpoint":
            c = _library_weights(c, h, "midpoint")
        w = np.asarray(c) @ taylor_weights([g.lam[b + i] for i in used], len(used))
        x_b = g.history[0][0]
        terms = [(wi, g.history[i][1]) for wi, i in zip(w.tolist(), used, strict=True)]
        return _combine(x_b, g.sigma[k + 1] / g.sigma[b], terms)

    def describe(self) -> str:
        kind = "" if self.solver_type == "taylor" else f", {self.solver_type}"
        return f"{self.name}(order={self.order}{kind})"


class DDIM(AffineSolver):
    """DDIM with stochasticity eta (Song, Meng & Ermon 2021, eq. 12), on any grid.

    From s to t < s (alpha = m, sigma = s): x0 = (x_s - sigma_s eps)/alpha_s and
    x_t = alpha_t x0 + sqrt(sigma_t^2 - c^2) eps + c z, where c = eta times the std of the
    Gaussian posterior q(x_t | x_s, x0). With the forward transition x_s | x_t ~ N(r x_t, w I)
    that std is sigma_t sqrt(w) / sigma_s, for every SDE here:
    VP (r = alpha_s/alpha_t): c = eta (sigma_t/sigma_s) sqrt(1 - alpha_s^2/alpha_t^2), eq. 16;
    VE (r = 1, w = sigma_s^2 - sigma_t^2): c = eta sqrt(sigma_t^2 (sigma_s^2 - sigma_t^2)) /
    sigma_s, k-diffusion's ancestral sigma_up. eta = 0 is deterministic (= DPM-Solver-1);
    eta = 1 on consecutive DDPM timesteps is DDPM ancestral sampling with the posterior variance.
    """

    name = "ddim"

    def __init__(self, eta: float = 0.0) -> None:
        self.eta = check_eta(eta)
        self.stochastic = self.eta > 0

    def coefficients(self, sde: SDE, t: Tensor, t_next: Tensor):
        a_s, s_s = sde.marginal(t)
        a_t, s_t = sde.marginal(t_next)
        _, w = sde.transition(t_next, t)
        c = self.eta * s_t * w.clamp_min(0).sqrt() / s_s
        e_coef = (s_t**2 - c**2).clamp_min(0).sqrt() - a_t * s_s / a_s
        return a_t / a_s, -s_s * e_coef, c  # eps = -sigma_s score

    @property
    def pathwise_limit(self) -> str | None:
        # eta = 1 is ancestral sampling, a discretisation of the reverse SDE; 0 < eta < 1
        # discretises a different SDE that no reference here solves
        return {0.0: "ode", 1.0: "reverse_sde"}.get(self.eta)

    def describe(self) -> str:
        return f"{self.name}(eta={self.eta:g})"


class SDEDPMSolverPP(Solver):
    """SDE-DPM-Solver++ (Lu et al. 2022b, App. D; orders 1-3), data prediction, stochastic.

    The reverse SDE's exact solution in lambda, with x0 expanded in a Taylor series:
    x_t = (sigma_t/sigma_s) e^(-h) x_s + alpha_t sum_k c_k D^(k) + sigma_t sqrt(1 - e^(-2h)) z,
    c_k = integral_0^h 2 e^(2(u-h)) u^k/k! du:
        c_0 = 1 - e^(-2h),  c_1 = h - (1 - e^(-2h))/2,  c_2 = 2 h^3 phi_3(-2h),
    D^(k) from the previous steps' predictions. Order 1 on consecutive DDPM timesteps is
    ancestral sampling with the posterior variance. ``solver_type`` "heun"/"midpoint" are
    diffusers' ``sde-dpmsolver++`` (orders 1-2) and k-diffusion's ``sample_dpmpp_2m_sde``
    (midpoint by default) and ``sample_dpmpp_3m_sde`` ("heun"), which keep half of the f''
    term at third order (see ``_library_weights``).
    """

    name = "sde_dpm_solver++"
    stochastic = True
    pathwise_limit = "reverse_sde"

    def __init__(self, order: int = 2, solver_type: str = "taylor") -> None:
        self.order = _check_order(order, 3)
        self.solver_type = _check_solver_type(solver_type)

    def prepare(self, run: Run):
        return _Grid.of(run.sde, run.grid), _Predictor(run)

    def step(self, x: Tensor, k: int, run: Run, plan) -> Tensor:
        g, predict = plan
        d = predict.x0(x, run.t[k], g.alpha[k], g.sigma[k])
        g.history = [d, *g.history[: self.order - 1]]
        h = g.lam[k + 1] - g.lam[k]  # inf on the last step when sigma_0 = 0
        one_m = -math.expm1(-2 * h)  # 1 - e^(-2h)
        last = run.is_last(k)  # own step to t = 0 (denoise=False): first order, no noise
        q = 1 if last else min(self.order, len(g.history))
        a_t = g.alpha[k + 1]
        c = [a_t * one_m]
        if q > 1:
            c += [a_t * (h - one_m / 2), a_t * 2 * h**3 * phi(3, -2 * h)][: q - 1]
        if self.solver_type != "taylor":
            c = _library_weights(c, h, self.solver_type)
        w = np.asarray(c) @ taylor_weights([g.lam[k - j] for j in range(q)], q)
        cx = g.sigma[k + 1] / g.sigma[k] * math.exp(-h)
        out = _combine(x, cx, list(zip(w.tolist(), g.history, strict=False)))
        if last:
            return out
        z = run.noise(run.times[k], run.times[k + 1])
        return out.add_(z, alpha=g.sigma[k + 1] * math.sqrt(one_m))

    def describe(self) -> str:
        kind = "" if self.solver_type == "taylor" else f", {self.solver_type}"
        return f"{self.name}(order={self.order}{kind})"
