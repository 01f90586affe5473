"""`scoresde schedules`: plot alpha_bar(t), log-SNR(t) and beta(t) and where grids put points."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from scoresde.core.grids import GRIDS, make_time_grid
from scoresde.core.schedules import (
    CosineSchedule,
    DiscreteSchedule,
    LinearSchedule,
    LogAlphaBarSchedule,
    NoiseSchedule,
)
from scoresde.core.sde import VPSDE


def default_schedules() -> dict[str, NoiseSchedule]:
    return {
        "linear": LinearSchedule(),
        "cosine": CosineSchedule(),
        "ddpm-linear-1000": DiscreteSchedule.linear(),
        # a user-defined one: log alpha_bar = -(9 t^2 + t), beta = 18 t + 1 (by autograd)
        "custom -(9t^2+t)": LogAlphaBarSchedule(lambda t: -(9 * t**2 + t), name="quadratic"),
    }


# the DDPM linear table follows the continuous linear schedule to plotting accuracy: dashes
# over a wider solid line keep both visible
STYLES = [
    {"lw": 3.5, "alpha": 0.6},
    {"lw": 1.5},
    {"lw": 1.5, "ls": (0, (4, 3)), "color": "black"},
    {"lw": 1.5, "ls": ":"},
]


def output_path(out: str | Path) -> Path:
    """The PNG file for ``--out``: a directory (existing, or written with a trailing slash or
    without a suffix) gets schedules.png inside; missing parent directories are created."""
    path = Path(out)
    if path.is_dir() or str(out).endswith(("/", os.sep)) or not path.suffix:
        path = path / "schedules.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def schedule_report(steps: int, eps: float, out: str | Path) -> str:
    """Write the PNG to ``out`` (a file, or a directory: see ``output_path``) and return a
    compact table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = output_path(out)
    scheds = default_schedules()
    t = torch.linspace(eps, 1.0, 400, dtype=torch.float64)
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    rows = [
        f"{'schedule':<20} {'t(SNR=1)':>9} {'logSNR(eps)':>12} {'logSNR(1)':>10} "
        f"{'beta min':>9} {'beta max':>9}"
    ]
    for (name, s), style in zip(scheds.items(), STYLES, strict=True):
        lam = s.log_snr(t)
        beta = s.beta(t)
        axes[0].plot(t, s.alpha_bar(t), label=name, **style)
        axes[1].plot(t, lam, label=name, **style)
        axes[2].plot(t, beta, label=name, **style)
        rows.append(
            f"{name:<20} {float(s.t_from_log_snr(0.0)):9.4f} {float(lam[0]):12.3f} "
            f"{float(lam[-1]):10.3f} {float(beta.min()):9.4f} {float(beta.max()):9.3f}"
        )
    sde = VPSDE(scheds["linear"])
    for i, rule in enumerate(GRIDS):
        grid = make_time_grid(sde, steps, rule, eps)[:-1]
        axes[3].plot(grid, [i] * len(grid), "|", ms=14, label=rule)
    axes[3].set_yticks(range(len(GRIDS)), list(GRIDS))
    for ax, title in zip(
        axes,
        ("alpha_bar(t)", "log-SNR(t)", "beta(t)", f"{steps}-point grids (linear VP)"),
        strict=True,
    ):
        ax.set_title(title)
        ax.set_xlabel("t")
        ax.grid(alpha=0.3)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    lines = [*rows, "", f"grids with {steps} points on the linear VP schedule (t values):"]
    for rule in GRIDS:
        grid = make_time_grid(sde, steps, rule, eps)[:-1]
        lines.append(f"  {rule:<9} " + " ".join(f"{v:.3g}" for v in grid.tolist()))
    lines.append(f"\nwrote {out}")
    return "\n".join(lines)
