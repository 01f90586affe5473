"""Sampler parity with k-diffusion on the tiny random UNet (through its
DiscreteEpsDDPMDenoiser), in float64, with shared noise: the samples agree to 1e-4 relative
(tests/parity/test_diffusers.py explains the bound); and the k-diffusion view of a VP model
samples as its VP view."""

import inspect
import math

import pytest
import torch
from reference_samplers import TOL, ListNoise, N, k_diffusion_modules, rel_diff

import scoresde as sd
from scoresde.models.interop import (
    diffusers_timesteps,
    from_diffusers,
    from_k_diffusion,
    time_grid_from_sigmas,
    time_grid_from_timesteps,
)

diffusers = pytest.importorskip("diffusers")


K_CASES = [
    ("sample_euler", {}, "ddim", {}),
    ("sample_euler_ancestral", {}, "euler_ancestral", {}),
    ("sample_euler_ancestral", {"eta": 0.5}, "euler_ancestral", {"eta": 0.5}),
    ("sample_heun", {}, "edm_heun", {}),
    ("sample_dpmpp_2m", {}, "dpm_solver++", {"order": 2, "solver_type": "midpoint"}),
    ("sample_dpmpp_2s_ancestral", {}, "dpm_solver++_2s_ancestral", {}),
    ("sample_dpmpp_2s_ancestral", {"eta": 0.0}, "dpm_solver++_2s_ancestral", {"eta": 0.0}),
    ("sample_dpmpp_2m_sde", {}, "sde_dpm_solver++", {"order": 2, "solver_type": "midpoint"}),
    ("sample_dpmpp_2m_sde", {"solver_type": "heun"}, "sde_dpm_solver++",
     {"order": 2, "solver_type": "heun"}),
    ("sample_dpmpp_3m_sde", {}, "sde_dpm_solver++", {"order": 3, "solver_type": "heun"}),
]  # fmt: skip


@pytest.fixture(scope="module")
def k_denoiser(unet):
    _, external = k_diffusion_modules()
    alphas_cumprod = diffusers.DDPMScheduler().alphas_cumprod.double()
    return external.DiscreteEpsDDPMDenoiser(lambda x, t: unet(x, t).sample, alphas_cumprod, True)


@pytest.mark.parametrize(("sampler", "kwargs", "solver", "options"), K_CASES)
def test_parity_with_k_diffusion(k_denoiser, noise, sampler, kwargs, solver, options):
    sampling, _ = k_diffusion_modules()
    z_T, draws = noise
    den = k_denoiser
    tau = diffusers_timesteps({}, N, "trailing")  # integer timesteps: exact table sigmas
    sigmas = torch.cat([den.sigmas[tau], den.sigmas.new_zeros(1)])
    if "noise_sampler" in inspect.signature(getattr(sampling, sampler)).parameters:
        kwargs = {**kwargs, "noise_sampler": ListNoise(draws)}
    with torch.no_grad():
        theirs = getattr(sampling, sampler)(den, z_T * sigmas[0], sigmas, disable=True, **kwargs)
    spec = from_k_diffusion(den, float(den.sigma_min), float(den.sigma_max), (2, 8, 8))
    grid = time_grid_from_sigmas(spec.sde, sigmas)
    with torch.no_grad():
        ours = sd.sample(spec.score, spec.sde, x_T=z_T * sigmas[0], steps=None, time_grid=grid,
                         solver=sd.solvers.get(solver, **options),
                         noise=ListNoise(draws))  # fmt: skip
    assert rel_diff(ours.samples, theirs) <= TOL


def test_k_diffusion_view_of_a_vp_model_matches_the_vp_view(unet, k_denoiser, noise):
    """The same network sampled through from_diffusers (VP) and from_k_diffusion (VE view of
    its sigma-denoiser): DDIM is Euler in sigma~ in both, so the samples agree."""
    z_T, _ = noise
    tau = diffusers_timesteps({}, N, "leading")
    vp = from_diffusers(unet, {"clip_sample": False})
    ve = from_k_diffusion(k_denoiser, float(k_denoiser.sigma_min), float(k_denoiser.sigma_max),
                          vp.shape)  # fmt: skip
    sig_T = float(k_denoiser.sigmas[tau[0]])
    with torch.no_grad():
        a = sd.sample(vp.score, vp.sde, x_T=z_T, solver="ddim", steps=None,
                      time_grid=time_grid_from_timesteps(tau, 1000)).samples  # fmt: skip
        b = sd.sample(
            ve.score,
            ve.sde,
            x_T=z_T * math.sqrt(1 + sig_T**2),
            solver="ddim",
            steps=None,
            time_grid=time_grid_from_sigmas(ve.sde, k_denoiser.sigmas[tau]),
        )
    assert rel_diff(b.samples, a) <= TOL
