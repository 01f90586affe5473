"""The Gaussian paths ``compare`` runs the analytic targets on, by name.

A path spec is ``name`` or ``name:shift=a``:

    vp-linear, vp-cosine, vp-discrete   VP SDE on the linear, cosine or DDPM-table schedule
    subvp                               Song et al.'s sub-VP SDE (linear schedule)
    edm                                 VE with EDM's range: m = 1, s from 0.002 to 80
    rectified-flow                      m = 1 - t, s = t (zero terminal SNR)
    cosine                              m = cos(pi t / 2), s = sin(pi t / 2) (zero terminal SNR)

``shift=a`` (rectified-flow and cosine) runs the path on SD3's shifted clock
tau = a t / (1 + (a - 1) t). The mixtures' exact scores follow from their marginals under any
of these, so every solver runs on every path from the same data.
"""

from __future__ import annotations

from collections.abc import Callable

from scoresde.core.gaussian_path import GaussianPath, cosine_path, rectified_flow, shifted
from scoresde.core.schedules import CosineSchedule, DiscreteSchedule, LinearSchedule
from scoresde.core.sde import SDE, VESDE, VPSDE, SubVPSDE

PATHS: dict[str, Callable[[], SDE]] = {
    "vp-linear": lambda: VPSDE(LinearSchedule()),
    "vp-cosine": lambda: VPSDE(CosineSchedule()),
    "vp-discrete": lambda: VPSDE(DiscreteSchedule.linear()),
    "subvp": lambda: SubVPSDE(LinearSchedule()),
    "edm": lambda: VESDE(sigma_min=0.002, sigma_max=80.0),
    "rectified-flow": rectified_flow,
    "cosine": cosine_path,
}
SHIFTABLE = ("rectified-flow", "cosine")


def path_from_spec(spec: str) -> SDE:
    """The SDE of a path spec ``name[:shift=a]`` (module doc); a ValueError names the path."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"path must be a name like 'rectified-flow:shift=3', got {spec!r}")
    name, _, option = spec.partition(":")
    if name not in PATHS:
        raise ValueError(f"path: unknown path {name!r}; known: {', '.join(PATHS)}")
    sde = PATHS[name]()
    if not option:
        return sde
    key, _, value = option.partition("=")
    if key != "shift" or not value:
        raise ValueError(f"path {spec!r}: the only option is shift=a (e.g. {name}:shift=3)")
    if name not in SHIFTABLE:
        raise ValueError(f"path {spec!r}: shift applies to {' and '.join(SHIFTABLE)} only")
    try:
        a = float(value)
    except ValueError:
        raise ValueError(f"path {spec!r}: shift must be a number, got {value!r}") from None
    assert isinstance(sde, GaussianPath)
    return shifted(sde, a)
