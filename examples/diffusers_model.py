"""A diffusers model in scoresde: `scoresde compare --model examples/diffusers_model.py:NAME`.

``pretrained`` is the documented path for a trained pipeline (it needs the Hugging Face hub,
so the tests do not run it):

    scoresde compare --model examples/diffusers_model.py:pretrained --solvers ddim,dpm_solver++
    scoresde generate --model examples/diffusers_model.py:pretrained --num 50000 --out cifar10/

``tiny`` and ``tiny_guided`` build a randomly initialised class-conditional UNet2DModel
locally (no download); the tests run both commands on them end to end. ``tiny_guided`` samples
with classifier-free guidance, scale 2.0, class 4 as the null class.

In Python the same spec drives ``sample`` directly:

    spec = pretrained()
    out = scoresde.sample(spec.score, spec.sde, (16, *spec.shape), solver="dpm_solver++",
                          steps=20, time_grid="logsnr")
"""

from __future__ import annotations

import torch

from scoresde.core.guidance import ClassifierFreeGuidance
from scoresde.models import ModelSpec
from scoresde.models.interop import from_diffusers

NULL_CLASS = 4  # tiny models: classes 0-3, label 4 = "no class" (condition dropout)
FAST_COMPARE = {"reference": ("ode_heun", 200), "sde_reference": ("euler_maruyama", 200)}


def pretrained(model_id: str = "google/ddpm-cifar10-32") -> ModelSpec:
    """A hub pipeline's UNet and scheduler; fp16 works too: ``pipe.unet.half()`` on a GPU."""
    from diffusers import DDPMPipeline

    pipe = DDPMPipeline.from_pretrained(model_id)
    spec = from_diffusers(pipe.unet.eval().requires_grad_(False), pipe.scheduler)
    return spec


def _tiny_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(0)  # the example's own random weights; the library never seeds globally
    return (
        UNet2DModel(
            sample_size=8,
            in_channels=3,
            out_channels=3,
            layers_per_block=1,
            block_out_channels=(16, 32),
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
            num_class_embeds=NULL_CLASS + 1,
        )
        .eval()
        .requires_grad_(False)
    )


def _labels(index: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"class_labels": index % NULL_CLASS}  # sample i is of class i mod 4


def tiny() -> ModelSpec:
    """Class-conditional: sample i gets class i mod 4 (keyed by index: batch-size invariant)."""
    from diffusers import DDPMScheduler

    spec = from_diffusers(_tiny_unet(), DDPMScheduler(clip_sample=False))
    spec.condition = _labels
    spec.compare_defaults = dict(FAST_COMPARE)
    return spec


def tiny_guided(scale: float = 2.0) -> ModelSpec:
    """``tiny`` with classifier-free guidance: uncond + scale (cond - uncond), one batched call."""
    spec = tiny()
    spec.score = ClassifierFreeGuidance(spec.score, scale, {"class_labels": NULL_CLASS})
    return spec
