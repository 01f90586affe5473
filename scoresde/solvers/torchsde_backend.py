"""The reverse SDE integrated by ``torchsde.sdeint``.

torchsde needs increasing time and 2-D states, so the reverse SDE is written on s = T - t
with the state flattened to (B, D):

    dx = -[a(t) x - g(t)^2 score(x, t)] ds + g(t) dW_s,   t = T - s,

integrated from s = 0 to s = T - eps on the grid's (uniform) evaluation times; the last step
eps -> 0 is the shared noise-free final step. The Brownian motion is explicit: the run's own
``BrownianNoise`` path when sampling with ``noise="brownian"`` (then the result matches
``euler_maruyama`` path by path), else a ``BrownianInterval`` seeded from the generator.
"""

from __future__ import annotations

import torch
import torchsde
from torch import Tensor

from scoresde.core.noise import BrownianNoise
from scoresde.solvers.base import Run, Solver, StepCallback
from scoresde.solvers.reverse_sde import EulerMaruyama

_METHODS = ("euler", "milstein", "srk")


class _ReverseTimeSDE(torch.nn.Module):
    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, run: Run, shape: torch.Size, dtype: torch.dtype) -> None:
        super().__init__()
        self.run, self.shape, self.dtype = run, shape, dtype
        self.first: tuple[Tensor, Tensor, Tensor] | None = None
        self.calls = 0

    def _t(self, s: Tensor) -> Tensor:
        return (self.run.sde.T - s).to(self.dtype).expand(self.shape[0])

    def f(self, s: Tensor, y: Tensor) -> Tensor:
        # torchsde checks the drift's shape by calling f(ts[0], y0) before its first step,
        # which calls f(ts[0], y0) again: keep the first value for that second call (one
        # comparison, before the loop), so a run costs its planned score evaluations
        if self.first is not None:
            s0, y0, out = self.first
            self.first = None
            if torch.equal(s, s0) and torch.equal(y, y0):
                return out
        t = self._t(s)
        x = y.reshape(self.shape)
        out = -self.run.sde.reverse_drift(x, t, self.run.score(x, t)).reshape(y.shape)
        if self.calls == 0:
            self.first = (s, y, out)
        self.calls += 1
        return out

    def g(self, s: Tensor, y: Tensor) -> Tensor:
        return self.run.sde.diffusion(self._t(s)[:1]).expand_as(y)


class TorchsdeSolver(Solver):
    """Reverse SDE through ``torchsde.sdeint`` (``method``: euler, milstein or srk).

    Needs a uniform grid. Always name the method: torchsde's own default ``srk`` costs several
    score evaluations per step; ``euler`` costs one.
    """

    name = "torchsde"
    family = "SDE"
    stochastic = True
    order = 0.5

    def __init__(self, method: str = "euler") -> None:
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        self.method = method

    def integrate(self, x: Tensor, run: Run, callback: StepCallback | None = None) -> Tensor:
        evals = run.grid[:-1]
        if evals.numel() > 2:
            gaps = torch.diff(evals)
            if not torch.allclose(gaps, gaps[0].expand_as(gaps), rtol=1e-9, atol=1e-12):
                raise ValueError("the torchsde solver needs a uniform time grid")
        if evals.numel() > 1:
            shape = x.shape
            ts = (run.sde.T - evals).to(device=x.device, dtype=torch.float64)
            # torchsde steps while t < the next output time: a dt that rounds short of it
            # takes an extra, tiny step (and score evaluation). A dt a hair longer lands just
            # past it, where torchsde interpolates the output (error ~1e-10 of a step).
            dt = float(ts[1] - ts[0]) * (1 + 1e-10)
            # SRK needs space-time Lévy areas; torchsde then draws another path from the same
            # entropy, so srk is reproducible by seed but not on euler's Brownian path
            levy = "space-time" if self.method == "srk" else "none"
            entropy = run.noise.entropy if isinstance(run.noise, BrownianNoise) else None
            if isinstance(run.noise, BrownianNoise) and levy == "none":
                bm = run.noise.bm
            else:
                bm = BrownianNoise(x, run.generator, run.sde.T, entropy=entropy, levy_area=levy).bm
            y = torchsde.sdeint(
                _ReverseTimeSDE(run, shape, x.dtype),
                x.reshape(shape[0], -1),
                ts,
                bm=bm,
                method=self.method,
                dt=dt,
                adaptive=False,
            )
            x = y[-1].reshape(shape)
            if callback is not None:
                callback(run.steps - 2, run.eps, x)
        # the last step, eps -> 0: the shared noise-free final step
        last = Run(
            run.sde, run.score, run.noise, run.grid[-2:], run.t[-2:], run.denoise, run.generator
        )
        report = None if callback is None else (lambda k, t, x: callback(run.steps - 1, t, x))
        return EulerMaruyama().integrate(x, last, report)

    def describe(self) -> str:
        return f"{self.name}(method={self.method})"
