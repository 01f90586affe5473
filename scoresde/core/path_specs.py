"""Gaussian paths by name: the ones ``compare`` runs the analytic targets on, and the ones a
trained model's ``model.json`` names (so loading it builds the path from a name, never code).

A path spec is ``name`` or ``name:shift=a``:

    vp-linear, vp-cosine, vp-discrete   VP SDE on the linear, cosine or DDPM-table schedule
    ddpm-linear, ddpm-cosine            VP on DDPM's tables (N = 1000): linear beta 1e-4..0.02
                                        (the same as vp-discrete), Nichol and Dhariwal's cosine
    ddpm-zsnr                           the linear table rescaled to zero terminal SNR (Lin
                                        et al. 2024)
    subvp                               Song et al.'s sub-VP SDE (linear schedule)
    ve                                  score_sde's VE SDE, sigma from 0.01 to 50
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
from scoresde.core.schedules import (
    CosineSchedule,
    DiscreteSchedule,
    LinearSchedule,
    rescale_zero_terminal_snr,
)
from scoresde.core.sde import SDE, VESDE, VPSDE, SubVPSDE

PATHS: dict[str, Callable[[], SDE]] = {
    "vp-linear": lambda: VPSDE(LinearSchedule()),
    "vp-cosine": lambda: VPSDE(CosineSchedule()),
    "vp-discrete": lambda: VPSDE(DiscreteSchedule.linear()),
    "ddpm-linear": lambda: VPSDE(DiscreteSchedule.linear()),
    "ddpm-cosine": lambda: VPSDE(DiscreteSchedule.cosine()),
    "ddpm-zsnr": lambda: VPSDE(
        DiscreteSchedule(rescale_zero_terminal_snr(DiscreteSchedule.linear().betas))
    ),
    "subvp": lambda: SubVPSDE(LinearSchedule()),
    "ve": lambda: VESDE(),
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
