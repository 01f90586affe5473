"""Helpers for the parity and interop tests: a tiny random diffusers UNet, the sizes of the
shared start and noise, the relative difference and its bound, diffusers' scheduler loop with
recorded noise, and k-diffusion's sampler module loaded without its heavy package imports."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

B, N = 3, 10  # batch of the shared start and noise; sampling steps
TOL = 1e-4  # bound on rel_diff for parity: see tests/parity/test_diffusers.py


def rel_diff(a, b):
    """max |a - b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max())


def tiny_unet(num_class_embeds: int | None = None, dtype=torch.float64):
    """A randomly initialised 2x8x8 UNet2DModel (42k parameters), built from a config."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)  # diffusers initialises from torch's global RNG; tests only
    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=2,
        out_channels=2,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        num_class_embeds=num_class_embeds,
    )
    return unet.to(dtype).eval()


class ListNoise:
    """A NoiseSource returning the given draws in order (the same list diffusers consumes)."""

    def __init__(self, draws: list[torch.Tensor]) -> None:
        self.draws, self.k = draws, 0

    def __call__(self, t: float | None = None, t_next: float | None = None) -> torch.Tensor:
        z = self.draws[self.k]
        self.k += 1
        return z.clone()

    normal = __call__


def run_diffusers(scheduler, model, x, draws, step_kwargs=None):
    """diffusers' sampling loop; the scheduler's noise draws come from ``draws`` in order.
    Schedulers without ``scale_model_input`` (FlowMatch) feed x to the model as it is."""
    module = importlib.import_module(type(scheduler).__module__)
    it = iter(draws)
    original = getattr(module, "randn_tensor", None)
    if original is not None:
        module.randn_tensor = lambda shape, **kw: next(it).clone()
    try:
        with torch.no_grad():
            for t in scheduler.timesteps:
                scale = getattr(scheduler, "scale_model_input", None)
                out = model(x if scale is None else scale(x, t), t).sample
                x = scheduler.step(out, t, x, **(step_kwargs or {})).prev_sample
    finally:
        if original is not None:
            module.randn_tensor = original
    return x


def _append_dims(x, target_dims):
    return x[(...,) + (None,) * (target_dims - x.ndim)]


def k_diffusion_modules():
    """k-diffusion's ``sampling`` and ``external`` modules from the installed distribution.

    The package's ``__init__`` imports its training stack (torchvision, CLIP, wandb ...), which
    the project does not install (torchvision would replace the CPU torch build); the sampler
    code needs only ``utils.append_dims`` from it, so the two modules are loaded under a
    private package name with that one helper when the real ``utils`` cannot be imported.
    """
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion is not installed (pip install --no-deps k-diffusion)")
    name = "_k_diffusion_reference"
    if name + ".external" in sys.modules:
        return sys.modules[name + ".sampling"], sys.modules[name + ".external"]
    root = Path(next(iter(spec.submodule_search_locations)))
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(root)]
    sys.modules[name] = pkg
    try:
        utils = _load(name, root, "utils")
    except ImportError:
        utils = types.ModuleType(name + ".utils")
        utils.append_dims = _append_dims
        sys.modules[name + ".utils"] = utils
    pkg.utils = utils
    pkg.sampling = _load(name, root, "sampling")
    pkg.external = _load(name, root, "external")
    return pkg.sampling, pkg.external


def _load(package: str, root: Path, module: str):
    spec = importlib.util.spec_from_file_location(f"{package}.{module}", root / f"{module}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
    except ImportError:
        del sys.modules[spec.name]
        raise
    return mod
