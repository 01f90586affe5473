"""Probability-flow ODE solvers: dx/dt = v(x, t) = a(t) x - 1/2 g(t)^2 score(x, t).

``ode_euler`` and ``ode_heun`` step on the fixed grid; ``ode_dopri5`` (torch-native) and
``ode_rk45`` (scipy's ``solve_ivp``) integrate [eps, T] adaptively with Dormand–Prince 5(4).
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde.core.checks import check_finite_positive
from scoresde.core.ode import dopri5, solve_ivp_scipy
from scoresde.core.sde import SDE
from scoresde.solvers.base import (
    AffineSolver,
    Run,
    Solver,
    StepCallback,
    affine,
    tweedie_step,
)
from scoresde.solvers.plan_scalars import Scalar, scalars


def _velocity_coefficients(sde: SDE, t: Tensor) -> tuple[Tensor, Tensor]:
    """(a(t), -1/2 g(t)^2): v = a x - 1/2 g^2 s."""
    g = sde.diffusion(t)
    return sde.drift_coeff(t), -0.5 * g * g


def velocity_at(sde: SDE, t: float) -> tuple[float, float]:
    """(a(t), -1/2 g(t)^2) as host floats at one time t, computed in float64."""
    a, c = _velocity_coefficients(sde, torch.tensor(t, dtype=torch.float64))
    return float(a), float(c)


def probability_flow_rhs(score, sde: SDE, like: Tensor):
    """The ODE right-hand side (t, (x,)) -> (v,) for adaptive solvers, one time for the batch:
    v = a(t) x - 1/2 g(t)^2 score(x, t), the score called with a (B,) time tensor."""
    b, opts = like.shape[0], {"device": like.device, "dtype": like.dtype}

    def rhs(t: float, y: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        a, c = velocity_at(sde, t)
        return (affine(y[0], score(y[0], torch.full((b,), t, **opts)), a, c),)

    return rhs


class ODEEuler(AffineSolver):
    """Euler on the probability-flow ODE: x_next = x + [a(t) x - 1/2 g(t)^2 s] dt."""

    name = "ode_euler"
    family = "ODE"

    def coefficients(self, sde: SDE, t: Tensor, t_next: Tensor):
        dt = t_next - t
        a, b = _velocity_coefficients(sde, t)
        return 1 + a * dt, b * dt, torch.zeros_like(t)


def zero_snr_velocity_coefficients(sde: SDE, t: float, t_next: float) -> tuple[float, float]:
    """(p, q) with v = p x + q x0_hat at a time t where m(t) = 0 (zero terminal SNR).

    In x0 form the probability-flow velocity is finite wherever s > 0:
    v = f x - 1/2 g^2 score with score = (m x0_hat - x) / s^2, f = m'/m and
    g^2 = 2 s s' - 2 (m'/m) s^2 gives

        v = (s'/s) x + (m' - m s'/s) x0_hat          (at m = 0: (s'/s) x + m' x0_hat),

    on rectified flow (m = 1 - t, s = t) v = x - x0_hat = eps_hat - x0_hat, the flow itself.
    Where the rates are not finite at t (a zero-SNR DDPM table, whose m' comes from
    f m = -inf * 0), the secant of the limit step (``zero_terminal``) to t_next is used:
    x_next = m(t_next) x0_hat + (s(t_next)/s(t)) x, i.e. p = (s(t_next)/s(t) - 1)/dt,
    q = m(t_next)/dt, which tends to the formula above as dt -> 0 and equals it on paths
    linear in t.
    """
    tt = torch.tensor(t, dtype=torch.float64)
    m, s = sde.marginal(tt)
    dm, ds = sde.marginal_rate(tt)
    p, q = ds / s, dm - m * ds / s
    if bool(torch.isfinite(p)) and bool(torch.isfinite(q)):
        return float(p), float(q)
    m_next, s_next = sde.marginal(torch.tensor(t_next, dtype=torch.float64))
    dt = t_next - t
    return float((s_next / s - 1) / dt), float(m_next / dt)


class ODEHeun(Solver):
    """Heun's method (explicit trapezoid) on the probability-flow ODE; order 2.

    d1 = v(x, t); x_pred = x + d1 dt; d2 = v(x_pred, t_next); x_next = x + (d1 + d2)/2 dt.
    Two evaluations per step except the last (t_next = 0, where the score is undefined), which
    is an Euler step (or the denoiser): NFE = 2N - 1.

    On a path with m(T) = 0 (zero terminal SNR) it takes its own first step from T
    (``takes_zero_terminal_step``): there d1 is the velocity in x0 form,
    v = (s'/s) x + (m' - m s'/s) x0_hat (``zero_snr_velocity_coefficients``), from the
    model's x0 prediction. On rectified flow this is diffusers' FlowMatchHeunDiscreteScheduler
    step for step.
    """

    name = "ode_heun"
    family = "ODE"
    evals_per_step = 2
    order = 2.0
    takes_zero_terminal_step = True
    differentiable_grid = True

    def planned_nfe(self, steps: int) -> int:
        return 2 * steps - 1

    def prepare(self, run: Run) -> list[tuple[Scalar, Scalar, Scalar, Scalar, Scalar, bool]]:
        t, t_next = run.grid[:-1], run.grid[1:]
        a1, b1 = _velocity_coefficients(run.sde, t)
        a2, b2 = _velocity_coefficients(run.sde, t_next.clamp_min(run.eps))
        dt = t_next - t
        rows = [(*r, False) for r in zip(*(scalars(v) for v in (a1, b1, a2, b2, dt)), strict=True)]
        m_0 = float(run.sde.marginal(run.grid[:1].detach())[0][0])
        if m_0 == 0.0 and run.steps > 1:  # first step from m = 0: v = p x + q x0_hat
            p, q = zero_snr_velocity_coefficients(run.sde, run.times[0], run.times[1])
            rows[0] = (p, q, *rows[0][2:5], True)
        return rows

    def step(self, x: Tensor, k: int, run: Run, plan) -> Tensor:
        a1, b1, a2, b2, dt, x0_form = plan[k]
        model = run.score.x0 if x0_form else run.score  # type: ignore[attr-defined]
        d1 = affine(x, model(x, run.t[k]), a1, b1)
        x_pred = x + d1 * dt
        if run.is_last(k):
            return x_pred
        d2 = affine(x_pred, run.score(x_pred, run.t[k + 1]), a2, b2)
        return x + (d1 + d2) * (0.5 * dt)


class _AdaptiveODE(Solver):
    """Adaptive integration of the probability-flow ODE from T to eps, then the final step.

    The grid only supplies T and eps; ``rtol``/``atol`` set the accuracy, and the run's NFE is
    the integrator's evaluations plus the final step eps -> 0. The integrator's accepted and
    rejected step counts land in ``Solution.stats``.
    """

    adaptive = True
    order = 5.0
    integrator = staticmethod(dopri5)

    def __init__(self, rtol: float = 1e-5, atol: float = 1e-5) -> None:
        self.rtol = check_finite_positive("rtol", rtol)
        self.atol = check_finite_positive("atol", atol)

    def planned_nfe(self, steps: int) -> int:
        return -1  # unknown in advance

    def integrate(self, x: Tensor, run: Run, callback: StepCallback | None = None) -> Tensor:
        sde, velocity = run.sde, probability_flow_rhs(run.score, run.sde, x)
        start = run.times[0]  # T, or t_1 after a zero-terminal-SNR limit step
        res = self.integrator(velocity, (x,), start, run.eps, rtol=self.rtol, atol=self.atol)
        run.stats.update(
            ode_steps=res.accepted,
            rejected_steps=res.rejected,
            min_step=min(res.step_sizes, default=0.0),
        )
        x = res.y[0]
        if callback is not None and run.steps > 1:
            callback(run.steps - 2, run.eps, x)
        if run.denoise:
            x = tweedie_step(x, run)
        else:
            t_eps = run.t[-2]
            x = x + sde.probability_flow_drift(x, t_eps, run.score(x, t_eps)) * (-run.eps)
        if callback is not None:
            callback(run.steps - 1, 0.0, x)
        return x

    def describe(self) -> str:
        return f"{self.name}(rtol={self.rtol:g}, atol={self.atol:g})"


class ODEDopri5(_AdaptiveODE):
    """Adaptive Dormand–Prince 5(4) with a PI controller, torch-native (``scoresde.core.ode``).

    Runs on the samples' device; one host read per attempted step (the error norm).
    """

    name = "ode_dopri5"
    family = "ODE"
    integrator = staticmethod(dopri5)


class ODERK45(_AdaptiveODE):
    """Adaptive RK45 through ``scipy.integrate.solve_ivp`` (Dormand–Prince 5(4)).

    Host round-trip: scipy works on a float64 NumPy vector, so every evaluation copies the
    state to the host and back (on GPU: two transfers and a synchronisation per evaluation).
    Kept for cross-checking ``ode_dopri5``.
    """

    name = "ode_rk45"
    family = "ODE"
    integrator = staticmethod(solve_ivp_scipy)
