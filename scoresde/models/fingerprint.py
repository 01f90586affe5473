"""A model's identity as a hash: what ``generate`` checks before resuming a run, and what a
tuned grid records about the model it was tuned on."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from scoresde.models.spec import ModelSpec


def model_fingerprint(spec: ModelSpec, device: str | torch.device = "cpu") -> str:
    """SHA-256 of what identifies the model: its output on a fixed probe input, plus every
    parameter and buffer when the network is an ``nn.Module`` (or wraps one, as
    ``interop.DiffusersNet`` does). A conditional model is probed with the conditions of
    samples 0 and 1.

    The probe is x = sin(1 + k) over the (2, *shape) elements, at t = (0.3, 0.7), in float32
    on ``device`` (where the model runs); its output is rounded to 4 significant figures of its
    largest entry, and that largest entry itself to 4 significant figures, so the fingerprint
    survives the last-bit differences of another device or BLAS but not new weights nor an
    output rescaled by a constant factor.
    """
    h = hashlib.sha256()
    shape = (2, *spec.shape)
    x = torch.sin(1.0 + torch.arange(math.prod(shape), dtype=torch.float32)).reshape(shape)
    with torch.no_grad():
        out = spec.probe_score(x.to(device), torch.tensor([0.3, 0.7], device=device)).double().cpu()
    scale = float(out.abs().max()) or 1.0
    h.update(np.round(out.numpy() / scale * 1e4).astype(np.int64).tobytes())
    h.update(f"{scale:.3e}".encode())
    net = getattr(spec.score, "net", None)
    if isinstance(net, torch.nn.Module) or callable(getattr(net, "state_dict", None)):
        for name, value in net.state_dict().items():
            h.update(name.encode())
            h.update(str((value.dtype, tuple(value.shape))).encode())
            flat = value.detach().cpu().clone(memory_format=torch.contiguous_format)
            h.update(flat.view(torch.uint8).numpy().tobytes())  # logical order, any layout
    return h.hexdigest()
