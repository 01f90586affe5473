"""Sample a 2-D Gaussian mixture with its exact score, with three solvers, and measure them."""

import torch

import scoresde as sd
from scoresde import metrics
from scoresde.evaluation.targets import mixture_2d

target, sde = mixture_2d(), sd.VPSDE(sd.LinearSchedule())
score = sd.score_from_eps(lambda x, t: target.eps(x, t, sde), sde)  # an "ε-network"
reference = target.sample(4000, torch.Generator().manual_seed(1))

for solver, steps in [("ddpm_ancestral", 100), ("euler_maruyama", 100), ("ode_heun", 50)]:
    sol = sd.sample(
        score,
        sde,
        (4000, 2),
        solver=solver,
        steps=steps,
        generator=torch.Generator().manual_seed(0),
    )
    sw = metrics.sliced_wasserstein(sol.samples, reference)
    print(f"{solver:16s} NFE {sol.nfe:4d}  sliced W1 {sw:.4f}")
