"""Print docs/interop.md's parity table: `python docs/parity_table.py` from the repository root.

Runs every case of tests/parity/ (diffusers and k-diffusion samplers against their
scoresde counterparts on the tiny random UNet, float64, shared start and noise) and prints
max |ours - theirs| / max |theirs| per case, for three noise seeds (the largest is shown).
"""

import inspect
import sys
from pathlib import Path

import torch

# tests/, whose modules the parity tests import by name, and the repository (tests.parity)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import diffusers
from reference_samplers import B, ListNoise, N, k_diffusion_modules, rel_diff, tiny_unet

import scoresde as sd
from scoresde.models.interop import diffusers_timesteps, from_k_diffusion, time_grid_from_sigmas
from tests.parity.test_diffusers import (
    DIFFUSERS_CASES,
    FRACTIONAL_CASES,
    SIGMA_MIN_CASES,
    diffusers_parity,
    diffusers_parity_sigma_min,
)
from tests.parity.test_k_diffusion import K_CASES


def _noise(seed):
    g = torch.Generator().manual_seed(seed)
    z_T = torch.randn(B, 2, 8, 8, generator=g, dtype=torch.float64)
    return z_T, [torch.randn(B, 2, 8, 8, generator=g, dtype=torch.float64) for _ in range(2 * N)]


def _fmt(options):
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"


def _row(library, sampler, config, solver, options, run_case) -> None:
    """One table row: the largest relative difference over three noise seeds, where
    ``run_case(noise)`` returns (ours, theirs) for one seed's start and draws."""
    worst = max(rel_diff(*run_case(_noise(seed))) for seed in (1, 2, 3))
    print(f"| {library} | {sampler} ({_fmt(config)}) | {solver} ({_fmt(options)}) | {worst:.1e} |")


def main() -> None:
    unet = tiny_unet()
    print("| library | sampler (options) | scoresde solver (options) | max rel. diff. |")
    print("|---|---|---|---|")
    for case in DIFFUSERS_CASES:
        _row("diffusers", *case, lambda nz, c=case: diffusers_parity(unet, nz, *c)[:2])
    for case in FRACTIONAL_CASES:
        _row("diffusers, fractional_timesteps=True", *case,
             lambda nz, c=case: diffusers_parity(unet, nz, *c,
                                                 fractional_timesteps=True)[:2])  # fmt: skip
    for case in SIGMA_MIN_CASES:
        _row("diffusers, to sigma_min", *case,
             lambda nz, c=case: diffusers_parity_sigma_min(unet, nz, *c))  # fmt: skip
    sampling, external = k_diffusion_modules()
    acp = diffusers.DDPMScheduler().alphas_cumprod.double()
    den = external.DiscreteEpsDDPMDenoiser(lambda x, t: unet(x, t).sample, acp, True)
    spec = from_k_diffusion(den, float(den.sigma_min), float(den.sigma_max), (2, 8, 8))
    tau = diffusers_timesteps({}, N, "trailing")
    sigmas = torch.cat([den.sigmas[tau], den.sigmas.new_zeros(1)])
    grid = time_grid_from_sigmas(spec.sde, sigmas)

    def k_case(noise, sampler, kwargs, solver, options):
        z_T, draws = noise
        kw = dict(kwargs)
        if "noise_sampler" in inspect.signature(getattr(sampling, sampler)).parameters:
            kw["noise_sampler"] = ListNoise(draws)
        with torch.no_grad():
            theirs = getattr(sampling, sampler)(den, z_T * sigmas[0], sigmas, disable=True, **kw)
            ours = sd.sample(spec.score, spec.sde, x_T=z_T * sigmas[0], steps=None,
                             time_grid=grid, solver=sd.solvers.get(solver, **options),
                             noise=ListNoise(draws)).samples  # fmt: skip
        return ours, theirs

    for case in K_CASES:
        _row("k-diffusion", *case, lambda nz, c=case: k_case(nz, *c))


if __name__ == "__main__":
    main()
