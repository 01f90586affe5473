"""Print docs/interop.md's parity table: `python docs/parity_table.py` from the repository root.

Runs every case of tests/test_interop.py (diffusers and k-diffusion samplers against their
scoresde counterparts on the tiny random UNet, float64, shared start and noise) and prints
max |ours - theirs| / max |theirs| per case, for three noise seeds (the largest is shown).
"""

import inspect
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import diffusers

import scoresde as sd
from scoresde.interop import diffusers_timesteps, from_k_diffusion, time_grid_from_sigmas
from tests.reference_samplers import ListNoise, k_diffusion_modules, tiny_unet
from tests.test_interop import (
    DIFFUSERS_CASES,
    K_CASES,
    SIGMA_MIN_CASES,
    B,
    N,
    diffusers_parity,
    diffusers_parity_sigma_min,
)


def _noise(seed):
    g = torch.Generator().manual_seed(seed)
    z_T = torch.randn(B, 2, 8, 8, generator=g, dtype=torch.float64)
    return z_T, [torch.randn(B, 2, 8, 8, generator=g, dtype=torch.float64) for _ in range(2 * N)]


def _fmt(options):
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"


def main() -> None:
    unet = tiny_unet()
    seeds = (1, 2, 3)
    print("| library | sampler (options) | scoresde solver (options) | max rel. diff. |")
    print("|---|---|---|---|")
    for name, config, solver, options in DIFFUSERS_CASES:
        worst = 0.0
        for seed in seeds:
            ours, theirs, _ = diffusers_parity(unet, _noise(seed), name, config, solver, options)
            worst = max(worst, float((ours - theirs).abs().max() / theirs.abs().max()))
        print(f"| diffusers | {name} ({_fmt(config)}) | {solver} ({_fmt(options)}) | {worst:.1e} |")
    for name, config, solver, options in SIGMA_MIN_CASES:
        worst = 0.0
        for seed in seeds:
            ours, theirs = diffusers_parity_sigma_min(
                unet, _noise(seed), name, config, solver, options
            )
            worst = max(worst, float((ours - theirs).abs().max() / theirs.abs().max()))
        print(
            f"| diffusers, to sigma_min | {name} ({_fmt(config)}) | {solver} ({_fmt(options)}) "
            f"| {worst:.1e} |"
        )
    sampling, external = k_diffusion_modules()
    acp = diffusers.DDPMScheduler().alphas_cumprod.double()
    den = external.DiscreteEpsDDPMDenoiser(lambda x, t: unet(x, t).sample, acp, True)
    spec = from_k_diffusion(den, float(den.sigma_min), float(den.sigma_max), (2, 8, 8))
    tau = diffusers_timesteps({}, N, "trailing")
    sigmas = torch.cat([den.sigmas[tau], den.sigmas.new_zeros(1)])
    grid = time_grid_from_sigmas(spec.sde, sigmas)
    for sampler, kwargs, solver, options in K_CASES:
        worst = 0.0
        for seed in seeds:
            z_T, draws = _noise(seed)
            kw = dict(kwargs)
            if "noise_sampler" in inspect.signature(getattr(sampling, sampler)).parameters:
                kw["noise_sampler"] = ListNoise(draws)
            with torch.no_grad():
                theirs = getattr(sampling, sampler)(
                    den, z_T * sigmas[0], sigmas, disable=True, **kw
                )
                ours = sd.sample(spec.score, spec.sde, x_T=z_T * sigmas[0], steps=None,
                                 time_grid=grid, solver=sd.solvers.get(solver, **options),
                                 noise=ListNoise(draws)).samples  # fmt: skip
            worst = max(worst, float((ours - theirs).abs().max() / theirs.abs().max()))
        print(
            f"| k-diffusion | {sampler} ({_fmt(kwargs)}) | {solver} ({_fmt(options)}) "
            f"| {worst:.1e} |"
        )


if __name__ == "__main__":
    main()
