"""Test-set bits/dim of the digits model, continuous against discrete, from one network.

Both bound the same discrete probability P(k) of a test image k in {0..16}^64 under the same
bins (each grey level owns a bin of width w = 2/17 in [-1, 1], see ``scoresde.digits.data``):

- probability-flow ODE: uniform dequantisation y = -1 + (k + u) w, u ~ U[0, 1)^64, then
  -log P(k) <= -log p(y) - 64 log w (``scoresde.log_likelihood`` from t = 1/N, the first DDPM
  timestep, to T = 1; ``scoresde.bits_per_dim(levels=17)``);
- DDPM variational bound: Ho et al.'s L_vlb with the discretised decoder on the same bins,
  data at the bin centres (``scoresde.core.ddpm.variational_bound``), reverse variance beta~;
  for models on a DDPM table only (a continuous-time model has no bound here, and the ODE
  starts at ``sample``'s default eps).

Each is a mean over test images with its standard error (which includes the dequantisation,
Hutchinson and x_i draws, all one per image); the paired difference uses the same images.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from scoresde.core.ddpm import variational_bound
from scoresde.core.schedules import DiscreteSchedule
from scoresde.digits.data import LEVELS, levels_to_model, load_split
from scoresde.evaluation.estimates import Estimate, estimate
from scoresde.likelihood import bits_per_dim, dequantize, log_likelihood
from scoresde.models import ModelSpec
from scoresde.sample import default_eps


@dataclass
class DigitsLikelihood:
    """Per-image bits/dim of the test images (``images`` of them) by both methods."""

    ode: torch.Tensor
    vlb: torch.Tensor | None
    ode_nfe: int
    vlb_nfe: int
    ode_seconds: float
    vlb_seconds: float
    settings: dict

    def summary(self) -> dict[str, Estimate]:
        out = {"ode": estimate(self.ode.tolist())}
        if self.vlb is not None:
            out["vlb"] = estimate(self.vlb.tolist())
            out["vlb - ode"] = estimate((self.vlb - self.ode).tolist())
        return out


def digits_likelihood(
    spec: ModelSpec,
    *,
    images: int | None = None,
    trace: str = "hutchinson",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    variance: str = "posterior",
    seed: int = 0,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> DigitsLikelihood:
    """Bits/dim of the first ``images`` test digits (default all 450) by the PF-ODE (with
    ``trace``: "hutchinson", one Rademacher probe per image, or "exact") and by the DDPM bound,
    for ``spec``, the digits model (``load_model("digits")``)."""
    test = load_split("test").levels
    if images is not None:
        if not 2 <= images <= len(test):
            raise ValueError(f"images must lie in [2, {len(test)}], got {images}")
        test = test[:images]
    k = test.to(device)
    gen = torch.Generator(device).manual_seed(seed)
    schedule = getattr(spec.sde, "schedule", None)
    discrete = isinstance(schedule, DiscreteSchedule)
    n = schedule.num_timesteps if discrete else 0
    eps = default_eps(spec.sde)
    start = time.perf_counter()
    y = dequantize(k, levels=LEVELS, generator=gen, dtype=dtype)
    res = log_likelihood(
        spec.score, spec.sde, y, trace=trace, rtol=rtol, atol=atol, eps=eps, generator=gen
    )
    ode = bits_per_dim(res.log_prob.double(), y[0].numel(), levels=LEVELS).cpu()
    ode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    vlb = None
    if discrete:
        with torch.no_grad():
            terms = variational_bound(
                spec.score.eps, schedule, levels_to_model(k, dtype), levels=LEVELS,
                variance=variance, generator=gen,
            )  # fmt: skip
        vlb = terms.bits_per_dim().double().cpu()
    settings = {
        "images": int(k.shape[0]),
        "trace": trace,
        "rtol": rtol,
        "atol": atol,
        "eps": eps,
        "variance": variance,
        "seed": seed,
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
    }
    vlb_seconds = time.perf_counter() - start
    return DigitsLikelihood(ode, vlb, res.nfe, n, ode_seconds, vlb_seconds, settings)


def format_digits_likelihood(result: DigitsLikelihood) -> str:
    s = result.settings
    est = result.summary()
    uniform = math.log2(LEVELS)
    lines = [
        f"digits test set: {s['images']} images of 8x8 with 17 grey levels (bits/dim; mean ± "
        f"standard error over images; {s['device']}/{s['dtype']}, seed {s['seed']})",
        f"{'method':<44} {'bits/dim':>16} {'NFE':>6} {'time s':>7}",
        f"{'probability-flow ODE, uniform dequantisation':<44} "
        f"{est['ode'].mean:>8.4f} ± {est['ode'].se:.4f} {result.ode_nfe:>6} "
        f"{result.ode_seconds:>7.1f}",
    ]
    if result.vlb is not None:
        lines += [
            f"{'DDPM variational bound (discretised decoder)':<44} "
            f"{est['vlb'].mean:>8.4f} ± {est['vlb'].se:.4f} {result.vlb_nfe:>6} "
            f"{result.vlb_seconds:>7.1f}",
            f"{'difference (bound - ODE), same images':<44} "
            f"{est['vlb - ode'].mean:>8.4f} ± {est['vlb - ode'].se:.4f}",
        ]
    lines += [
        f"ODE: dopri5 rtol={s['rtol']:g} atol={s['atol']:g} from t = {s['eps']:g}, trace "
        f"{s['trace']}; y = -1 + (k + u) 2/17, bpd = -log2 p(y)/64 + log2(17/2). "
        + (
            f"Bound: Ho et al.'s L_vlb, reverse variance {s['variance']}. Both bound "
            if result.vlb is not None
            else "It bounds "
        )
        + f"-log2 P(k)/64; a uniform guess over the 17 levels scores log2(17) = {uniform:.3f}.",
    ]
    return "\n".join(lines)
