"""Adaptive-step reverse-SDE solver after Jolicoeur-Martineau et al. 2021, "Gotta Go Fast When
Generating Data with Score-Based Models" (arXiv:2105.14080), Algorithm 1.

Each attempt, per sample, with step h > 0 backwards in time and Brownian increment
dW = W(t - h) - W(t) (one increment shared by both methods):

    x'  = x + h F(x, t) + g(t) dW                                     (Euler–Maruyama)
    x~  = x + h F(x', t - h) + g(t - h) dW
    x'' = (x' + x~) / 2                                                (improved Euler, same dW)
    E   = RMS over the sample's elements of (x' - x'') / delta,
          delta = max(atol, rtol * max(|x'|, |x'_prev|))
    accept if E <= 1:  x = x'', t = t - h, x'_prev = x'
    h = min(t - eps, safety * h * E^(-r), 2 sqrt(T t) / ceiling_steps)

with F(x, t) = g(t)^2 score(x, t) - a(t) x the reverse-time drift. Every sample has its own
t and h (the score is called with per-sample times).

Three departures from the paper, each measured on the built-in mixtures (docs/benchmarks.md):

- Increments come from a ``BrownianMemory`` (rejection sampling with memory, Rackauckas &
  Nie 2017): a rejected W(t - h) is kept and the shorter retry is drawn from the Brownian
  bridge. The paper's fresh noise on retry selects accepted steps toward small increments;
  that bias kept it at 2-3x the SW1 noise floor whatever the tolerance.
- A step ceiling h <= 2 sqrt(T t) / ceiling_steps: the spacing of a quadratic time grid
  with ``ceiling_steps`` steps. With rtol relative to |x| the controller alone takes its
  largest steps near t = eps, where narrow modes need the smallest; the ceiling halves the
  SW1 excess at equal cost. ``ceiling_steps=None`` gives the paper's controller.
- After a rejection x and t are unchanged, so F(x, t) is reused: a rejected attempt costs one
  evaluation, an accepted one two. The score is called only on the rows that need it
  (samples still running; for F(x, t), those whose last attempt was accepted), so finished
  samples cost nothing and the batch pays the per-sample mean, not its slowest sample.

Host reads per iteration: the Brownian memory's fill and the indices of the rows to evaluate
(two ``nonzero`` calls), issued back to back so the device queue drains once. An adaptive
per-sample method cannot avoid them; with a network the score call dominates.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde.core.brownian_memory import BrownianMemory
from scoresde.core.checks import broadcast_time, check_finite_positive, check_positive_int
from scoresde.solvers.base import NonFiniteSampleError, Run, Solver, StepCallback, tweedie_step


class GottaGoFast(Solver):
    """Adaptive EM / improved-Euler pair with mixed tolerance; per-sample steps.

    Defaults follow the paper: rtol (eps_rel) 0.05, atol (eps_abs) 0.0078 (about 1/128, the
    quantisation step of [-1, 1] images; use smaller values for continuous data), safety 0.9,
    exponent r = 0.9, first step 0.01 (all in units of t); ``ceiling_steps`` 25 (None: no
    ceiling). ``Solution.stats`` records iterations, per-sample accepted / rejected step
    counts and per-sample score evaluations ``nfe_per_sample`` (mean and max; the final
    denoiser included). ``Solution.nfe`` counts score calls, each on the rows that needed it.
    """

    name = "adaptive_sde"
    family = "SDE"
    stochastic = True
    adaptive = True
    evals_per_step = 2

    def __init__(
        self,
        rtol: float = 0.05,
        atol: float = 0.0078,
        safety: float = 0.9,
        exponent: float = 0.9,
        first_step: float = 0.01,
        max_iterations: int = 100_000,
        ceiling_steps: int | None = 25,
    ) -> None:
        self.rtol = check_finite_positive("rtol", rtol)
        self.atol = check_finite_positive("atol", atol)
        self.safety = check_finite_positive("safety", safety)
        self.exponent = check_finite_positive("exponent", exponent)
        self.first_step = check_finite_positive("first_step", first_step)
        self.max_iterations = check_positive_int("max_iterations", max_iterations)
        self.ceiling_steps = (
            None if ceiling_steps is None else check_positive_int("ceiling_steps", ceiling_steps)
        )

    def planned_nfe(self, steps: int) -> int:
        return -1  # unknown in advance

    def _drift(self, run: Run, x: Tensor, t: Tensor, index: Tensor, out: Tensor) -> Tensor:
        """Write F(x, t) = g^2 score - a x into the rows ``index`` of ``out``; return ``out``.

        The score is called on those rows alone, so finished samples and samples whose drift
        is already known cost no evaluation; the other rows of ``out`` are left as they are.
        """
        if index.numel() == 0:
            return out
        xs, ts = x.index_select(0, index), t.index_select(0, index)
        g2 = run.sde.diffusion(ts).square()
        a = run.sde.drift_coeff(ts)
        f = run.score.rows(index)(xs, ts) * broadcast_time(g2, xs) - broadcast_time(a, xs) * xs
        return out.index_copy_(0, index, f)

    def _ceiling(self, run: Run, t: Tensor, t_next: Tensor) -> Tensor:
        """t_next raised so that h <= 2 sqrt(T t) / ceiling_steps (see the class docstring)."""
        if self.ceiling_steps is None:
            return t_next
        most = t.mul(run.sde.T).sqrt_().mul_(2.0 / self.ceiling_steps)
        return torch.maximum(t_next, t - most)

    def integrate(self, x: Tensor, run: Run, callback: StepCallback | None = None) -> Tensor:
        b = x.shape[0]
        opts = {"device": x.device, "dtype": x.dtype}
        eps = run.eps
        start = run.times[0]  # T, or t_1 after a zero-terminal-SNR limit step
        t = torch.full((b,), start, **opts)
        h = torch.full((b,), min(self.first_step, start - eps), **opts)
        x_prev = x.clone()
        f1 = torch.zeros_like(x)  # F(x, t), kept across a rejection (x and t unchanged)
        stale = torch.ones(b, dtype=torch.bool, device=x.device)  # F(x, t) not yet known
        accepted = torch.zeros(b, dtype=torch.long, device=x.device)
        rejected = torch.zeros_like(accepted)
        iterations = 0
        path = BrownianMemory(-t, x, run.noise.normal)  # W on s = -t, increasing as t falls
        non_finite = torch.zeros((), dtype=torch.bool, device=x.device)
        while True:
            active = t > eps
            need = active & stale
            # the host reads of an iteration, back to back so the device queue drains once:
            # a non-finite error norm, the memory's fill and the rows the score is called on
            if bool(non_finite):
                raise NonFiniteSampleError(
                    f"adaptive_sde: NaN/Inf in the drift at iteration {iterations} (t between "
                    f"{float(t.min()):.6g} and {float(t.max()):.6g}); check the score function"
                )
            path.reserve(int(path.count.max()))
            index = active.nonzero()[:, 0]
            if index.numel() == 0:
                break
            rows = need.nonzero()[:, 0]
            if iterations >= self.max_iterations:
                raise RuntimeError(
                    f"adaptive_sde: {self.max_iterations} iterations did not reach eps; "
                    "loosen rtol/atol or raise max_iterations"
                )
            iterations += 1
            t_next = self._ceiling(run, t, t - h).clamp_min(eps)
            # no sliver left before eps (float32 rounding of t - h would leave one)
            t_next = torch.where(t_next - eps < 0.01 * (t - t_next), eps, t_next)
            step = t - t_next
            hh = broadcast_time(step, x)
            dw = path.query(-t_next) - path.w
            f1 = self._drift(run, x, t, rows, out=f1)
            g1 = broadcast_time(run.sde.diffusion(t), x)
            x1 = x + hh * f1 + g1 * dw
            f2 = self._drift(run, x1, t_next, index, out=torch.zeros_like(x))
            g2 = broadcast_time(run.sde.diffusion(t_next), x)
            x2 = ((x + hh * f2 + g2 * dw) + x1) * 0.5
            delta = torch.maximum(x1.abs(), x_prev.abs()).mul_(self.rtol).clamp_min_(self.atol)
            # RMS over each sample's own elements: (B, -1) also for samples of shape (B,)
            err = ((x1 - x2) / delta).reshape(b, -1).pow(2).mean(dim=1).sqrt()
            non_finite = (~torch.isfinite(err) & active).any()
            ok = (err <= 1) & active
            okx = broadcast_time(ok, x)
            x = torch.where(okx, x2, x)
            x_prev = torch.where(okx, x1, x_prev)
            t = torch.where(ok, t_next, t)
            path.advance(ok)
            stale = ok
            accepted += ok
            rejected += active & ~ok
            grow = self.safety * step * err.clamp_min(1e-10).pow(-self.exponent)
            h = torch.where(active, torch.minimum(grow, t - eps), h)
            # a sample that has just landed on eps keeps h = 0 and is inactive from now on
        # per sample: F(x', t - h) on every attempt, F(x, t) at the start and after every
        # accepted step but the last (which lands on eps), and the final denoiser
        evals = 2 * accepted + rejected + int(run.denoise)
        run.stats.update(
            iterations=iterations,
            accepted_mean=accepted.double().mean().item(),
            accepted_max=int(accepted.max()),
            rejected_mean=rejected.double().mean().item(),
            rejected_max=int(rejected.max()),
            nfe_per_sample=evals.double().mean().item(),
            nfe_per_sample_max=int(evals.max()),
        )
        if not bool(torch.isfinite(x).all()):
            raise FloatingPointError("adaptive_sde produced NaN/Inf before reaching eps")
        if run.denoise:
            x = tweedie_step(x, run)
        if callback is not None:  # one report: the adaptive loop has no fixed steps
            callback(run.steps - 1, 0.0 if run.denoise else eps, x)
        return x

    def describe(self) -> str:
        return f"{self.name}(rtol={self.rtol:g}, atol={self.atol:g})"
