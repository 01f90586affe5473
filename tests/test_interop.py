"""from_diffusers / from_k_diffusion, and solver-for-scheduler parity with diffusers and
k-diffusion on a randomly initialised tiny UNet2DModel, in float64, with shared noise.

Every case starts both libraries from the same x_T, feeds them the same noise draws and asks
for the final samples to agree to 1e-4 relative (max |ours - theirs| / max |theirs|). The
measured differences are 1e-8 .. 3e-6 (float32 alphas_cumprod in diffusers against our
float64 table; docs/interop.md lists them), so 1e-4 leaves room for BLAS differences while
any formula difference (a wrong coefficient, an off-by-one timestep) shows as 1e-3 or more.
"""

import inspect
import math

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.models.interop import (
    InterpolatedDiscreteSchedule,
    diffusers_timesteps,
    from_diffusers,
    from_k_diffusion,
    schedule_from_config,
    time_grid_from_sigmas,
    time_grid_from_timesteps,
)
from tests.reference_samplers import ListNoise, k_diffusion_modules, run_diffusers, tiny_unet

diffusers = pytest.importorskip("diffusers")

B, N = 3, 10
TOL = 1e-4


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


@pytest.fixture(scope="module")
def noise():
    g = torch.Generator().manual_seed(1)
    z_T = torch.randn(B, 2, 8, 8, generator=g, dtype=torch.float64)
    draws = [torch.randn(B, 2, 8, 8, generator=g, dtype=torch.float64) for _ in range(2 * N)]
    return z_T, draws


# -- configs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {"beta_schedule": "linear"},
        {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
        {"beta_schedule": "squaredcos_cap_v2"},
        {"trained_betas": np.linspace(2e-4, 0.03, 500).tolist(), "num_train_timesteps": 500},
    ],
)
def test_schedule_from_config_matches_diffusers_alphas_cumprod(config):
    sched = diffusers.DDPMScheduler(**config)
    ours = schedule_from_config(sched)
    # diffusers keeps the table in float32: betas to 6e-8 relative; the product accumulates
    # 1e-6 over 1000 factors, and 1 - beta in float32 loses up to 6e-5 where beta = 0.999
    # (the cosine table's capped last entries)
    assert ours.betas.shape == sched.betas.shape
    assert torch.allclose(ours.betas, sched.betas.double(), rtol=1e-6, atol=0)
    assert torch.allclose(ours.alphas_cumprod, sched.alphas_cumprod.double(), rtol=1e-4, atol=0)


def test_unsupported_configs_are_refused_by_name():
    with pytest.raises(ValueError, match=r"beta_schedule 'sigmoid'.*linear, scaled_linear"):
        schedule_from_config({"beta_schedule": "sigmoid"})
    with pytest.raises(ValueError, match="rescale_betas_zero_snr"):
        schedule_from_config({"rescale_betas_zero_snr": True})
    with pytest.raises(ValueError, match="prediction_type 'flow'"):
        from_diffusers(lambda x, t: x, {"prediction_type": "flow"}, shape=(2,))
    with pytest.raises(ValueError, match="timestep_spacing 'karras'"):
        diffusers_timesteps({}, 10, "karras")
    with pytest.raises(ValueError, match="fractional timesteps"):
        time_grid_from_timesteps(torch.tensor([999.0, 888.5]), 1000)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("steps", [1, 7, 10, 50])
def test_timesteps_follow_diffusers_spacing_and_offset(spacing, offset, steps):
    for cls in (diffusers.DDPMScheduler, diffusers.DDIMScheduler):
        sched = cls(timestep_spacing=spacing, steps_offset=offset)
        sched.set_timesteps(steps)
        assert torch.equal(diffusers_timesteps(sched, steps), sched.timesteps.long())


def test_time_grid_puts_the_table_on_the_timesteps(unet):
    sched = diffusers.DDPMScheduler()
    spec = from_diffusers(unet, sched)
    tau = torch.tensor([999, 500, 17, 0])
    t = time_grid_from_timesteps(tau, 1000)
    assert torch.equal(spec.score.time_label(t), tau)
    m, _ = spec.sde.marginal(t)
    assert torch.allclose(m**2, sched.alphas_cumprod[tau].double(), rtol=2e-6)
    assert spec.shape == (2, 8, 8)


# -- diffusers ------------------------------------------------------------------------------------

DIFFUSERS_CASES = [
    ("DDPMScheduler", {"clip_sample": False}, "ddpm_ancestral", {}),
    ("DDPMScheduler", {"clip_sample": False, "variance_type": "fixed_large"},
     "ddpm_ancestral", {"variance": "beta"}),
    ("DDPMScheduler", {"clip_sample": True}, "ddpm_ancestral", {}),
    ("DDPMScheduler", {"clip_sample": False, "timestep_spacing": "trailing"}, "ddpm_ancestral", {}),
    ("DDIMScheduler", {"clip_sample": False}, "ddim", {}),
    ("DDIMScheduler", {"clip_sample": False, "steps_offset": 1}, "ddim", {}),
    ("DDIMScheduler", {"clip_sample": False, "step": {"eta": 0.5}}, "ddim", {"eta": 0.5}),
    ("DDIMScheduler", {"clip_sample": False, "step": {"eta": 1.0}}, "ddim", {"eta": 1.0}),
    ("EulerDiscreteScheduler", {}, "ddim", {}),
    ("EulerAncestralDiscreteScheduler", {}, "euler_ancestral", {}),
    ("HeunDiscreteScheduler", {}, "edm_heun", {}),
    ("DPMSolverMultistepScheduler", {"solver_order": 2, "solver_type": "heun"},
     "dpm_solver++", {"order": 2, "solver_type": "heun"}),
    ("DPMSolverMultistepScheduler", {"solver_order": 2, "solver_type": "midpoint"},
     "dpm_solver++", {"order": 2, "solver_type": "midpoint"}),
    ("DPMSolverMultistepScheduler", {"solver_order": 3, "solver_type": "heun"},
     "dpm_solver++", {"order": 3, "solver_type": "heun"}),
    ("DPMSolverMultistepScheduler", {"solver_order": 3, "solver_type": "midpoint"},
     "dpm_solver++", {"order": 3, "solver_type": "midpoint"}),
    ("DPMSolverMultistepScheduler",
     {"solver_order": 3, "solver_type": "heun", "lower_order_final": False},
     "dpm_solver++", {"order": 3, "solver_type": "heun", "lower_order_final": False}),
    ("DPMSolverMultistepScheduler",
     {"solver_order": 2, "algorithm_type": "sde-dpmsolver++", "solver_type": "midpoint"},
     "sde_dpm_solver++", {"order": 2, "solver_type": "midpoint"}),
    ("DPMSolverMultistepScheduler",
     {"solver_order": 2, "algorithm_type": "sde-dpmsolver++", "solver_type": "heun"},
     "sde_dpm_solver++", {"order": 2, "solver_type": "heun"}),
    ("DPMSolverMultistepScheduler",
     {"solver_order": 2, "thresholding": True, "sample_max_value": 1.5},
     "dpm_solver++", {"order": 2, "solver_type": "midpoint"}),
    ("DPMSolverSinglestepScheduler", {"solver_order": 2, "solver_type": "midpoint"},
     "dpm_solver++_single", {"order": 2, "solver_type": "midpoint"}),
    ("DPMSolverSinglestepScheduler", {"solver_order": 2, "solver_type": "heun"},
     "dpm_solver++_single", {"order": 2, "solver_type": "heun"}),
    ("DPMSolverSinglestepScheduler", {"solver_order": 3, "solver_type": "midpoint"},
     "dpm_solver++_single", {"order": 3, "solver_type": "midpoint"}),
    ("DPMSolverSinglestepScheduler", {"solver_order": 3, "solver_type": "heun"},
     "dpm_solver++_single", {"order": 3}),
    ("UniPCMultistepScheduler", {"solver_order": 1}, "unipc", {"order": 1}),
    ("UniPCMultistepScheduler", {"solver_order": 2}, "unipc", {"order": 2}),
    ("UniPCMultistepScheduler", {"solver_order": 3}, "unipc", {"order": 3}),
    ("UniPCMultistepScheduler", {"solver_order": 3, "disable_corrector": list(range(N))},
     "unipc", {"order": 3, "corrector": False}),
]  # fmt: skip

VE_FORM = ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler")


def diffusers_parity(
    unet, noise, scheduler_name, config, solver, options, steps=N, fractional_timesteps=False
):
    """(ours, theirs, spec) for one scheduler run with the same start and noise."""
    z_T, draws = noise
    config = dict(config)
    step_kwargs = config.pop("step", None)  # arguments of scheduler.step (DDIM's eta)
    steps = config.pop("steps", steps)  # set_timesteps' step count
    sched = getattr(diffusers, scheduler_name)(**config)
    sched.set_timesteps(steps)
    x_start = z_T * sched.init_noise_sigma
    x_T = x_start
    if scheduler_name in VE_FORM:  # they sample x~ = x / m; ours starts at m x~ (= z here)
        x_T = x_start / torch.sqrt(1 + sched.sigmas[0].double() ** 2)
    theirs = run_diffusers(sched, unet, x_start.clone(), draws, step_kwargs)
    spec = from_diffusers(unet, sched, fractional_timesteps=fractional_timesteps)
    tau = torch.unique_consecutive(sched.timesteps)  # Heun repeats each timestep
    grid = time_grid_from_timesteps(tau, sched.config.num_train_timesteps,
                                    fractional_timesteps=fractional_timesteps)  # fmt: skip
    with torch.no_grad():
        ours = sd.sample(spec.score, spec.sde, x_T=x_T, solver=sd.solvers.get(solver, **options),
                         steps=None, time_grid=grid, noise=ListNoise(draws)).samples  # fmt: skip
    return ours, theirs, spec


@pytest.mark.parametrize(("scheduler", "config", "solver", "options"), DIFFUSERS_CASES)
def test_parity_with_diffusers(unet, noise, scheduler, config, solver, options):
    ours, theirs, _ = diffusers_parity(unet, noise, scheduler, config, solver, options)
    assert _rel(ours, theirs) <= TOL


# diffusers' Euler/Heun at their default "linspace" spacing with 25 or 50 steps: fractional
# timesteps tau = linspace(0, 999, n), sigma~ interpolated linearly in tau, the network called
# with tau itself; reproduced by from_diffusers(..., fractional_timesteps=True). Without the
# option, time_grid_from_sigmas on the default schedule lands 1e-3 away (the label and the
# between-entries interpolation differ), and time_grid_from_timesteps refuses these timesteps.
FRACTIONAL_CASES = [
    ("EulerDiscreteScheduler", {"timestep_spacing": "linspace", "steps": 25}, "ddim", {}),
    ("EulerDiscreteScheduler", {"timestep_spacing": "linspace", "steps": 50}, "ddim", {}),
    ("HeunDiscreteScheduler", {"timestep_spacing": "linspace", "steps": 25}, "edm_heun", {}),
    ("HeunDiscreteScheduler", {"timestep_spacing": "linspace", "steps": 50}, "edm_heun", {}),
]  # fmt: skip


@pytest.mark.parametrize(("scheduler", "config", "solver", "options"), FRACTIONAL_CASES)
def test_parity_with_diffusers_fractional_timesteps(
    unet, noise, scheduler, config, solver, options
):
    ours, theirs, spec = diffusers_parity(
        unet, noise, scheduler, config, solver, options, fractional_timesteps=True
    )
    assert isinstance(spec.sde.schedule, InterpolatedDiscreteSchedule)
    assert _rel(ours, theirs) <= TOL


def test_fractional_timesteps_are_refused_without_the_option():
    sched = diffusers.EulerDiscreteScheduler()
    sched.set_timesteps(25)
    assert not bool((sched.timesteps == sched.timesteps.round()).all())
    with pytest.raises(ValueError, match=r"fractional_timesteps=True"):
        time_grid_from_timesteps(sched.timesteps, 1000)
    grid = time_grid_from_timesteps(sched.timesteps, 1000, fractional_timesteps=True)
    assert torch.allclose(grid * 1000 - 1, sched.timesteps.double(), rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match=r"must lie in \[0, 999\]"):
        time_grid_from_timesteps([999.5, 3.25], 1000, fractional_timesteps=True)
    with pytest.raises(TypeError, match="fractional_timesteps"):
        from_diffusers(lambda x, t: x, {}, shape=(2,), fractional_timesteps="interpolate")


@pytest.mark.parametrize("steps", [25, 30, 50])
def test_interpolated_schedule_is_diffusers_sigma_interpolation(unet, steps):
    sched = diffusers.EulerDiscreteScheduler()
    sched.set_timesteps(steps)
    spec = from_diffusers(unet, sched, fractional_timesteps=True)
    t = time_grid_from_timesteps(sched.timesteps, 1000, fractional_timesteps=True)
    m, s = spec.sde.marginal(t)
    # diffusers' formula, np.interp(tau, arange(N), sqrt((1 - acp) / acp)), on our float64
    # table; their float32 sigmas agree to 1e-4 (1 - acp in float32 near tau = 0)
    acp = spec.sde.schedule.alphas_cumprod.numpy()
    tau = sched.timesteps.double().numpy()
    interp = np.interp(tau, np.arange(1000), np.sqrt((1 - acp) / acp))
    assert torch.allclose(s / m, torch.from_numpy(interp), rtol=1e-12, atol=0)
    assert torch.allclose(s / m, sched.sigmas[:-1].double(), rtol=2e-4, atol=0)
    assert torch.allclose(spec.score.time_label(t), sched.timesteps.double(), rtol=0, atol=1e-9)
    # these sigmas and the timesteps give the same grid on this SDE
    sig_grid = time_grid_from_sigmas(spec.sde, torch.from_numpy(interp))
    assert torch.allclose(sig_grid, t, rtol=0, atol=1e-12)


def test_interpolated_schedule_is_one_coherent_sde():
    """alpha_bar = 1 / (1 + sigma~^2) equals the table at its timesteps; beta is
    -d log alpha_bar / dt; t_from_log_snr inverts log_snr; sigma~ is linear between knots."""
    table = schedule_from_config({})
    ours = InterpolatedDiscreteSchedule(table.betas)
    knots = torch.arange(1, 1001, dtype=torch.float64) / 1000
    assert torch.allclose(ours.alpha_bar(knots), table.alphas_cumprod, rtol=1e-12, atol=0)
    assert float(ours.alpha_bar(torch.tensor(0.0, dtype=torch.float64))) == 1.0
    t = torch.rand(500, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.cat([t, t * 0.002, torch.tensor([1.0])])
    autograd = sd.schedules.NoiseSchedule.beta(ours, t)  # the base class's autograd beta
    assert torch.allclose(ours.beta(t), autograd, rtol=1e-10, atol=1e-12)
    assert torch.allclose(ours.t_from_log_snr(ours.log_snr(t)), t, rtol=0, atol=1e-12)

    def sigma_tilde(t):  # sqrt((1 - alpha_bar) / alpha_bar)
        return torch.sqrt(torch.expm1(-ours.log_alpha_bar(t)))

    sig = sigma_tilde(t)
    assert torch.allclose(ours.log_snr(t), -2 * torch.log(sig), rtol=1e-12)
    mid = (torch.arange(1, 1000, dtype=torch.float64) + 0.5) / 1000  # halfway between knots
    sig_k = torch.sqrt((1 - table.alphas_cumprod) / table.alphas_cumprod)
    assert torch.allclose(sigma_tilde(mid), (sig_k[:-1] + sig_k[1:]) / 2, rtol=1e-12)


def test_fractional_option_at_integer_timesteps_changes_nothing(unet, noise):
    """10 steps: linspace(0, 999, 10) is integer, where both schedules and labels agree."""
    a, theirs, _ = diffusers_parity(unet, noise, "HeunDiscreteScheduler", {}, "edm_heun", {})
    b, _, _ = diffusers_parity(unet, noise, "HeunDiscreteScheduler", {}, "edm_heun", {},
                               fractional_timesteps=True)  # fmt: skip
    assert _rel(a, b) <= 1e-12
    assert _rel(b, theirs) <= TOL


# These schedulers end at sigma_min = sigma(timestep 0) rather than at the denoised x0: DEIS
# always, UniPC with final_sigmas_type="sigma_min" (with its default "zero", diffusers' bh1
# returns NaN: its last step multiplies B(h) = -h = -inf by an empty sum). Ours runs one more
# grid point, t(timestep 0), and the comparison reads the state there. With
# lower_order_final=False both sides keep the same order on that step.
SIGMA_MIN_CASES = [
    ("DEISMultistepScheduler", {"solver_order": 1}, "deis", {"order": 1}),
    ("DEISMultistepScheduler", {"solver_order": 2}, "deis", {"order": 2}),
    ("DEISMultistepScheduler", {"solver_order": 3}, "deis", {"order": 3}),
    ("DEISMultistepScheduler", {"solver_order": 3, "lower_order_final": False},
     "deis", {"order": 3, "lower_order_final": False}),
    ("UniPCMultistepScheduler", {"solver_order": 2, "solver_type": "bh1"},
     "unipc", {"order": 2, "variant": "bh1"}),
    ("UniPCMultistepScheduler", {"solver_order": 3, "solver_type": "bh1"},
     "unipc", {"order": 3, "variant": "bh1"}),
    ("UniPCMultistepScheduler", {"solver_order": 3, "solver_type": "bh2"},
     "unipc", {"order": 3, "variant": "bh2"}),
    ("UniPCMultistepScheduler", {"solver_order": 2, "solver_type": "bh2", "predict_x0": False},
     "unipc", {"order": 2, "variant": "bh2", "prediction": "eps"}),
]  # fmt: skip


def diffusers_parity_sigma_min(unet, noise, scheduler_name, config, solver, options):
    """(ours, theirs) at sigma_min for a scheduler that stops there, with the same start."""
    z_T, _ = noise
    if scheduler_name == "DEISMultistepScheduler":  # ends at sigma_min by itself
        config = {"lower_order_final": True, **config}
    else:
        config = {"final_sigmas_type": "sigma_min", "lower_order_final": False, **config}
    options = {"lower_order_final": config["lower_order_final"], **options}
    sched = getattr(diffusers, scheduler_name)(**config)
    sched.set_timesteps(N)
    theirs = run_diffusers(sched, unet, z_T.clone(), [])
    spec = from_diffusers(unet, sched)
    grid = time_grid_from_timesteps([*sched.timesteps.tolist(), 0], 1000)
    with torch.no_grad():
        sol = sd.sample(spec.score, spec.sde, x_T=z_T, solver=sd.solvers.get(solver, **options),
                        steps=None, time_grid=grid, return_trajectory=True)  # fmt: skip
    return sol.trajectory[-2], theirs


def test_singlestep_blocks_follow_diffusers_order_list():
    from scoresde.solvers.dpm_solver_singlestep import singlestep_blocks

    for order in (1, 2, 3):
        # set_timesteps forces lower_order_final=True when the last sigma is 0 (the default)
        sched = diffusers.DPMSolverSinglestepScheduler(solver_order=order, lower_order_final=True)
        for steps in range(1, 21):
            ours = [i + 1 for n in singlestep_blocks(steps, order) for i in range(n)]
            ours[-1] = 1  # the step to sigma = 0 is first order (ours: the denoiser)
            assert ours == sched.get_order_list(steps), (order, steps)


@pytest.mark.parametrize(("scheduler", "config", "solver", "options"), SIGMA_MIN_CASES)
def test_parity_with_diffusers_ending_at_sigma_min(unet, noise, scheduler, config, solver, options):
    ours, theirs = diffusers_parity_sigma_min(unet, noise, scheduler, config, solver, options)
    assert _rel(ours, theirs) <= TOL


def test_diffusers_ddim_clipping_is_use_clipped_model_output(unet, noise):
    """Our clipping acts on the score, so eps follows the clipped x0: diffusers' DDIM with
    ``use_clipped_model_output=True``; its default mixes clipped x0 with the raw eps."""
    z_T, _ = noise
    sched = diffusers.DDIMScheduler(clip_sample=True, clip_sample_range=0.5)
    sched.set_timesteps(N)
    theirs = []
    for clipped in (True, False):
        x = z_T.clone()
        with torch.no_grad():
            for t in sched.timesteps:
                eps = unet(x, t).sample
                x = sched.step(eps, t, x, use_clipped_model_output=clipped).prev_sample
        theirs.append(x)
    spec = from_diffusers(unet, sched)
    grid = time_grid_from_timesteps(sched.timesteps, 1000)
    with torch.no_grad():
        ours = sd.sample(spec.score, spec.sde, x_T=z_T, solver="ddim", steps=None, time_grid=grid)
    assert _rel(ours.samples, theirs[0]) <= TOL
    assert _rel(ours.samples, theirs[1]) > 100 * TOL  # the correction matters on this model


@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_prediction_types_match_diffusers(unet, noise, prediction_type):
    config = {"clip_sample": False, "prediction_type": prediction_type}
    ours, theirs, spec = diffusers_parity(unet, noise, "DDIMScheduler", config, "ddim", {})
    assert spec.score.prediction == {"sample": "x0", "v_prediction": "v"}[prediction_type]
    assert _rel(ours, theirs) <= TOL


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model_keeps_a_float32_state(noise, dtype):
    z_T, _ = noise
    half = tiny_unet(dtype=dtype)
    full = tiny_unet(dtype=torch.float32)
    sched = diffusers.DDIMScheduler(clip_sample=False)
    outs = []
    for model in (half, full):
        spec = from_diffusers(model, sched)
        with torch.no_grad():
            outs.append(sd.sample(spec.score, spec.sde, x_T=z_T.float(), solver="ddim",
                                  steps=None, time_grid=time_grid_from_timesteps(
                                      diffusers_timesteps(sched, N), 1000)).samples)  # fmt: skip
    assert outs[0].dtype == torch.float32
    # a half-precision network differs from its float32 copy by its rounding (2^-8 for
    # bfloat16 per evaluation), not by a wrong cast: the two agree to a few percent
    assert _rel(outs[0], outs[1]) < 0.05


# -- k-diffusion ----------------------------------------------------------------------------------

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
    assert _rel(ours.samples, theirs) <= TOL


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
    assert _rel(b.samples, a) <= TOL


# -- the example, end to end through the CLI -------------------------------------------

EXAMPLE = "examples/diffusers_model.py"


def test_example_model_through_compare(tmp_path, capsys):
    from scoresde.commands.cli import main

    out = tmp_path / "cmp"
    args = ["compare", "--model", f"{EXAMPLE}:tiny_guided", "--solvers", "ddim,dpm_solver++",
            "--nfe", "5", "--samples", "8", "--replicates", "2", "--no-progress",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    import json

    records = json.loads((out / "results.json").read_text())["records"]
    assert {r["solver"] for r in records} == {"ddim", "dpm_solver++"}
    assert (out / "grids").is_dir()


def test_generate_with_conditions_is_batch_size_invariant(tmp_path):
    from scoresde.commands.cli import main
    from scoresde.commands.generate import read_samples

    def run(name, model, batch):
        out = tmp_path / name
        assert main(["generate", "--model", f"{EXAMPLE}:{model}", "--num", "7", "--steps", "4",
                     "--batch-size", str(batch), "--shard-size", "4", "--out", str(out),
                     "--no-progress"]) == 0  # fmt: skip
        return read_samples(out)

    a = run("b3", "tiny_guided", 3)
    b = run("b5", "tiny_guided", 5)
    assert a.shape == (7, 3, 8, 8)
    # noise and labels depend on the sample index only; a float32 convolution may round
    # differently at another batch size (oneDNN picks kernels by shape), hence not bitwise
    print("batch 3 vs 5:", np.abs(a - b).max() / np.abs(a).max())
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()
    plain = run("plain", "tiny", 3)  # the same model without guidance: other samples
    assert np.abs(plain - a).max() > 1e-3


def test_generate_keys_conditions_by_sample_index(tmp_path):
    """Sample i gets condition(i) whatever batch it falls in: relabelling index 5 changes
    sample 5 alone."""
    from scoresde.commands.generate import generate, read_samples
    from tests.reference_samplers import tiny_unet

    unet = tiny_unet(num_class_embeds=3, dtype=torch.float32)
    outs = []
    for k, shift in enumerate((0, 1)):
        spec = from_diffusers(unet, {"clip_sample": False})

        def labels(i, shift=shift):
            return {"class_labels": (i % 2 + shift * (i == 5)).long()}

        spec.condition = labels
        generate(spec, tmp_path / str(k), num=8, steps=3, batch_size=3, progress=False)
        outs.append(read_samples(tmp_path / str(k)))
    differs = np.abs(outs[0] - outs[1]).reshape(8, -1).max(1) > 1e-4
    assert differs.tolist() == [i == 5 for i in range(8)]
