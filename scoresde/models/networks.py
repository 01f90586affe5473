"""The package's networks by name, so a model directory's model.json can name its network and
loading it runs only the package's code: ``{"kind": "unet", "width": 16, ...}``.

    unet   ``SmallUNet`` for images (C, H, W) with H and W divisible by 4
    mlp    ``SmallMLP`` for vectors (D,)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from scoresde.models.mlp import SmallMLP
from scoresde.models.unet import SmallUNet

NETWORKS: dict[str, type[nn.Module]] = {"unet": SmallUNet, "mlp": SmallMLP}
_KEYS = {"unet": ("width", "embed_dim", "channels"), "mlp": ("dim", "width", "depth", "embed_dim")}


def network_config(shape: tuple[int, ...], width: int) -> dict[str, Any]:
    """The default network for samples of ``shape``: a U-Net for (C, H, W) with H, W
    divisible by 4, an MLP for (D,)."""
    if len(shape) == 3 and shape[1] % 4 == 0 and shape[2] % 4 == 0:
        return {"kind": "unet", "width": width, "embed_dim": 64, "channels": shape[0]}
    if len(shape) == 1:
        return {"kind": "mlp", "dim": shape[0], "width": width, "depth": 3, "embed_dim": 64}
    raise ValueError(
        f"data: no built-in network for samples of shape {shape} (images (C, H, W) with H and "
        "W divisible by 4, or vectors (D,)); pass network= in Python"
    )


def build_network(config: dict[str, Any]) -> nn.Module:
    """The network ``config`` names (``NETWORKS``), from integer settings only."""
    kind = config.get("kind")
    if kind not in NETWORKS:
        raise ValueError(f"network kind must be one of {', '.join(NETWORKS)}, got {kind!r}")
    kwargs = {k: v for k, v in config.items() if k != "kind"}
    unknown = set(kwargs) - set(_KEYS[kind])
    if unknown or not all(isinstance(v, int) and not isinstance(v, bool) for v in kwargs.values()):
        raise ValueError(f"network {kind}: settings must be integers among {_KEYS[kind]}, got "
                         f"{kwargs}")  # fmt: skip
    return NETWORKS[kind](**kwargs)
