"""Running solvers on one problem from shared x_T and noise, and scoring their samples."""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from scoresde.evaluation import metrics
from scoresde.evaluation.estimates import estimate
from scoresde.evaluation.problem import Problem
from scoresde.evaluation.settings import ENTROPY_SAMPLES, SW1_PROJECTIONS
from scoresde.sample import sample
from scoresde.solvers.base import Solver


class Runner:
    """Runs solvers on one problem from the shared x_T (R * n rows) and noise seed."""

    def __init__(self, problem, x_T, replicates, noise_seed, dev, dtype, time_grid) -> None:
        self.problem, self.x_T, self.replicates = problem, x_T, replicates
        self.noise_seed, self.dev, self.dtype, self.time_grid = noise_seed, dev, dtype, time_grid

    def __call__(
        self,
        solver: Solver,
        steps: int,
        grid: str | Tensor | None = None,
        dtype=None,
        network_times: Tensor | None = None,
    ):
        grid = grid if grid is not None else self.time_grid
        dtype = dtype or self.dtype
        # a solver that reads batch statistics runs replicate by replicate, so that replicates
        # stay independent and each sees a batch of n, as a user's run would
        parts = self.x_T.chunk(self.replicates) if solver.batch_coupled else [self.x_T]
        start, sols = time.perf_counter(), []
        n, model = self.x_T.shape[0] // self.replicates, self.problem.model
        for r, x_T in enumerate(parts):
            gen = torch.Generator(device=self.dev).manual_seed(self.noise_seed + r)
            condition = None
            if model is not None:  # conditions keyed by the index within a replicate
                condition = model.condition_for(torch.arange(x_T.shape[0], device=self.dev) % n)
            sols.append(
                sample(
                    self.problem.score,
                    self.problem.sde,
                    x_T=x_T.to(dtype),
                    solver=solver,
                    steps=steps,
                    time_grid=grid,
                    generator=gen,
                    noise="brownian" if solver.stochastic else "gaussian",
                    dtype=dtype,
                    condition=condition,
                    network_times=network_times,
                )
            )
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        samples = torch.cat([s.samples for s in sols]).detach()
        return sols[0], samples, time.perf_counter() - start


class Scorer:
    """Per-replicate metrics of a run's samples (R * n rows), against the analytic target or,
    for a user model, against the next replicate's reference samples."""

    def __init__(self, problem: Problem, replicates: int, ode_ref: Tensor, seed: int) -> None:
        self.problem, self.r = problem, replicates
        self.ode_ref = ode_ref.to(torch.float64)
        self.sde_ref: Tensor | None = None
        g = problem.target
        self.expected: dict[str, float] = {}
        if g is not None:  # one kernel bandwidth per target, from a fixed exact sample
            self.bandwidth = metrics.median_bandwidth(g.sample(2000, seeded_generator(seed + 11)))
            # exact sampling's expected values: MMD^2 is unbiased (0) and E[-log p] = H(p),
            # here from ENTROPY_SAMPLES exact draws (standard error 0.002 nats on gmm2d, 0.006
            # on gmm8d: a tenth of xent's standard error over 10 replicates of n = 500)
            big = g.sample(ENTROPY_SAMPLES, seeded_generator(seed + 13)).to(torch.float64)
            self.expected = {"mmd": 0.0, "xent": float(-g.log_prob(big).mean())}
        else:
            self.bandwidth = metrics.median_bandwidth(self._split(self.ode_ref)[0])

    def _split(self, x: Tensor) -> Tensor:
        return x.reshape(self.r, -1, *x.shape[1:]).to(torch.float64)

    def __call__(self, x: Tensor, limit: str | None) -> dict[str, list[float]]:
        xs, g = self._split(x.cpu()), self.problem.target  # (R, n, ...) float64
        if g is not None:
            out = {
                "sw1": metrics.sliced_wasserstein_exact_replicates(xs, g, SW1_PROJECTIONS).tolist(),
                "mmd": [metrics.mmd_to_target(xr, g, self.bandwidth) for xr in xs],
                "mean_err": [metrics.mean_error(xr, g) for xr in xs],
                "cov_err": [metrics.covariance_error(xr, g) for xr in xs],
                "mode_err": [metrics.mode_weight_error(xr, g) for xr in xs],
                "xent": [metrics.cross_entropy(xr, g) for xr in xs],
            }
        else:  # replicate r against the reference of replicate r + 1: independent samples
            refs = self._split(self.ode_ref).roll(-1, dims=0)
            out = {
                "sw1": [metrics.sliced_wasserstein(a, b) for a, b in zip(xs, refs, strict=True)],
                "mmd": [
                    metrics.mmd_rbf(a, b, self.bandwidth) for a, b in zip(xs, refs, strict=True)
                ],
            }
        if self.problem.evaluator is not None:
            out.update(self.problem.evaluator(xs.reshape(self.r, -1, *self.problem.event_shape)))
        ref = {"ode": self.ode_ref, "reverse_sde": self.sde_ref}.get(limit) if limit else None
        if ref is None:
            out["coupled"] = [math.nan] * self.r
        else:
            dist = (xs - self._split(ref)).reshape(self.r, xs.shape[1], -1).norm(dim=-1)
            out["coupled"] = dist.mean(1).tolist()
        return out


def seeded_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def summarise(values: dict[str, list[float]]) -> tuple[dict[str, float], dict[str, float]]:
    est = {k: estimate(v) for k, v in values.items()}
    return {k: e.mean for k, e in est.items()}, {k: e.se for k, e in est.items()}
