"""Parity with diffusers on flow-matching and zero-terminal-SNR schedulers: the tiny random
UNet2DModel as a flow (or v) network, float64, the same x_T and noise draws on both sides,
final samples within 1e-4 relative (tests/parity/test_diffusers.py explains the bound).

diffusers' flow schedulers compute their update in float32 (``sample.to(torch.float32)``)
with float32 sigmas, which is where the 1e-8 .. 3e-7 differences (docs/interop.md) come from.

Which of our solvers is which scheduler:
- FlowMatchEuler is Euler in the flow sigma, x + (sigma_next - sigma) u. On the unshifted path
  (t = sigma) that is ``ode_euler``; on any path it is ``ddim`` (the first-order exponential
  integrator, x_next = m_next x0_hat + s_next eps_hat, which does not depend on the clock).
- FlowMatchHeun is Heun in sigma: ``ode_heun`` on the unshifted path. With shift != 1 from
  ``from_diffusers`` the SDE is rectified_flow(shift), whose time t is not sigma, and Heun in
  t is another method; the same model on the unshifted path, with the shifted scheduler's
  grid, reproduces it (``UNSHIFTED_CASES``).
- ``stochastic_sampling=True`` is x_next = (1 - sigma_next) x0_hat + sigma_next z: ``Renoise``.
"""

import pytest
import torch
from reference_samplers import TOL, ListNoise, rel_diff, run_diffusers

import scoresde as sd
from scoresde.models.interop import from_diffusers, time_grid_from_scheduler
from scoresde.solvers.renoise import Renoise

diffusers = pytest.importorskip("diffusers")

N = 10  # sampling steps
FLOW = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
ZERO_SNR = {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
            "prediction_type": "v_prediction", "clip_sample": False}  # fmt: skip

FLOW_CASES = [
    ("FlowMatchEulerDiscreteScheduler", {"shift": 1.0}, "ode_euler", {}),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 1.0}, "ddim", {}),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, "ddim", {}),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 1.0, "stochastic_sampling": True},
     "renoise", {}),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0, "stochastic_sampling": True},
     "renoise", {}),
    ("FlowMatchEulerDiscreteScheduler", {"use_dynamic_shifting": True, "mu": 0.8}, "ddim", {}),
    ("FlowMatchEulerDiscreteScheduler",
     {"use_dynamic_shifting": True, "time_shift_type": "linear", "mu": 2.0}, "ddim", {}),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0, "shift_terminal": 0.1}, "ddim", {}),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0, "invert_sigmas": True}, "ddim", {}),
    ("FlowMatchHeunDiscreteScheduler", {"shift": 1.0}, "ode_heun", {}),
    ("DPMSolverMultistepScheduler", {**FLOW, "solver_order": 2, "solver_type": "midpoint"},
     "dpm_solver++", {"order": 2, "solver_type": "midpoint"}),
    ("DPMSolverMultistepScheduler",
     {**FLOW, "flow_shift": 3.0, "solver_order": 2, "solver_type": "midpoint"},
     "dpm_solver++", {"order": 2, "solver_type": "midpoint"}),
    ("UniPCMultistepScheduler", {**FLOW, "solver_order": 2}, "unipc", {"order": 2}),
    ("UniPCMultistepScheduler", {**FLOW, "flow_shift": 3.0, "solver_order": 2},
     "unipc", {"order": 2}),
    ("DDIMScheduler", ZERO_SNR, "ddim", {}),
]  # fmt: skip

# shift 3 step for step: the model on the unshifted path (t = sigma), the shifted grid
UNSHIFTED_CASES = [
    ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, "ode_euler", {}),
    ("FlowMatchHeunDiscreteScheduler", {"shift": 3.0}, "ode_heun", {}),
]  # fmt: skip

UNREGISTERED = {"renoise": Renoise}  # solvers built here by class


def flow_parity(unet, noise, scheduler_name, config, solver, options, unshifted=False):
    """(ours, theirs, spec) for one scheduler run with the same start and noise."""
    z_T, draws = noise
    config = dict(config)
    mu = config.pop("mu", None)  # set_timesteps' argument (dynamic shifting)
    sched = getattr(diffusers, scheduler_name)(**config)
    sched.set_timesteps(N, **({} if mu is None else {"mu": mu}))
    theirs = run_diffusers(sched, unet, z_T * getattr(sched, "init_noise_sigma", 1.0), draws)
    # a config dict (scheduler.config has no _class_name: name the class)
    spec_config = {**sched.config, "_class_name": scheduler_name, "shift": 1.0}
    spec = from_diffusers(unet, spec_config if unshifted else sched, mu=mu)
    grid = time_grid_from_scheduler(sched, spec.sde)
    make = UNREGISTERED.get(solver)
    chosen = make(**options) if make is not None else sd.solvers.get(solver, **options)
    with torch.no_grad():
        ours = sd.sample(spec.score, spec.sde, x_T=z_T, solver=chosen, steps=None,
                         time_grid=grid, noise=ListNoise(draws)).samples  # fmt: skip
    return ours, theirs, spec


@pytest.mark.parametrize(("scheduler", "config", "solver", "options"), FLOW_CASES)
def test_parity_with_diffusers_flow(unet, noise, scheduler, config, solver, options):
    ours, theirs, _ = flow_parity(unet, noise, scheduler, config, solver, options)
    assert rel_diff(ours, theirs) <= TOL


@pytest.mark.parametrize(("scheduler", "config", "solver", "options"), UNSHIFTED_CASES)
def test_shifted_euler_and_heun_step_for_step_on_the_unshifted_path(
    unet, noise, scheduler, config, solver, options
):
    ours, theirs, spec = flow_parity(unet, noise, scheduler, config, solver, options, True)
    assert spec.sde.name == "rectified-flow"
    assert rel_diff(ours, theirs) <= TOL
    # on rectified_flow(3) the same solver steps in t, not sigma: another method
    other, _, shifted = flow_parity(unet, noise, scheduler, config, solver, options)
    assert shifted.sde.name == "rectified-flow:shift=3"
    assert rel_diff(other, theirs) > 10 * TOL  # measured 2.7e-3 (Heun), 3e-2 (Euler)


def test_heun_takes_its_own_first_step_from_sigma_one(unet, noise):
    """diffusers' FlowMatchHeun takes a full Heun step from sigma = 1; so does ode_heun
    (2N - 1 evaluations), where the other solvers take the limit step."""
    z_T, _ = noise
    sched = diffusers.FlowMatchHeunDiscreteScheduler()
    sched.set_timesteps(N)
    spec = from_diffusers(unet, sched)
    grid = time_grid_from_scheduler(sched, spec.sde)
    assert float(grid[0]) == 1.0 and len(grid) == N
    with torch.no_grad():
        sol = sd.sample(spec.score, spec.sde, x_T=z_T, solver="ode_heun", steps=None,
                        time_grid=grid)  # fmt: skip
    assert sol.nfe == 2 * N - 1 == len(sched.timesteps)
