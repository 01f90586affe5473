"""Solver-for-scheduler parity with diffusers on a randomly initialised tiny UNet2DModel, in
float64, with shared noise (docs/interop.md's table; docs/parity_table.py prints it).

Every case starts both libraries from the same x_T, feeds them the same noise draws and asks
for the final samples to agree to 1e-4 relative (max |ours - theirs| / max |theirs|). The
measured differences are 1e-8 .. 3e-6 (float32 alphas_cumprod in diffusers against our
float64 table; docs/interop.md lists them), so 1e-4 leaves room for BLAS differences while
any formula difference (a wrong coefficient, an off-by-one timestep) shows as 1e-3 or more.
"""

import pytest
import torch
from reference_samplers import TOL, ListNoise, N, rel_diff, run_diffusers

import scoresde as sd
from scoresde.models.interop import (
    InterpolatedDiscreteSchedule,
    from_diffusers,
    time_grid_from_timesteps,
)

diffusers = pytest.importorskip("diffusers")


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
    assert rel_diff(ours, theirs) <= TOL


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
    assert rel_diff(ours, theirs) <= TOL


def test_fractional_option_at_integer_timesteps_changes_nothing(unet, noise):
    """10 steps: linspace(0, 999, 10) is integer, where both schedules and labels agree."""
    a, theirs, _ = diffusers_parity(unet, noise, "HeunDiscreteScheduler", {}, "edm_heun", {})
    b, _, _ = diffusers_parity(unet, noise, "HeunDiscreteScheduler", {}, "edm_heun", {},
                               fractional_timesteps=True)  # fmt: skip
    assert rel_diff(a, b) <= 1e-12
    assert rel_diff(b, theirs) <= TOL


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


@pytest.mark.parametrize(("scheduler", "config", "solver", "options"), SIGMA_MIN_CASES)
def test_parity_with_diffusers_ending_at_sigma_min(unet, noise, scheduler, config, solver, options):
    ours, theirs = diffusers_parity_sigma_min(unet, noise, scheduler, config, solver, options)
    assert rel_diff(ours, theirs) <= TOL


def test_singlestep_blocks_follow_diffusers_order_list():
    from scoresde.solvers.dpm_solver_singlestep import singlestep_blocks

    for order in (1, 2, 3):
        # set_timesteps forces lower_order_final=True when the last sigma is 0 (the default)
        sched = diffusers.DPMSolverSinglestepScheduler(solver_order=order, lower_order_final=True)
        for steps in range(1, 21):
            ours = [i + 1 for n in singlestep_blocks(steps, order) for i in range(n)]
            ours[-1] = 1  # the step to sigma = 0 is first order (ours: the denoiser)
            assert ours == sched.get_order_list(steps), (order, steps)


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
    assert rel_diff(ours.samples, theirs[0]) <= TOL
    assert rel_diff(ours.samples, theirs[1]) > 100 * TOL  # the correction matters on this model


@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_prediction_types_match_diffusers(unet, noise, prediction_type):
    config = {"clip_sample": False, "prediction_type": prediction_type}
    ours, theirs, spec = diffusers_parity(unet, noise, "DDIMScheduler", config, "ddim", {})
    assert spec.score.prediction == {"sample": "x0", "v_prediction": "v"}[prediction_type]
    assert rel_diff(ours, theirs) <= TOL
