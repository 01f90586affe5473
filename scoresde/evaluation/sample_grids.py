"""Sample grids: the first samples of every run, from the same x_T, as images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scoresde.core.output_dir import check_output_dir
from scoresde.evaluation.record import Record

GRID_COLUMNS = 16  # samples per row of the sample grids (the first x_T rows)


def _mosaic(rows: Sequence[Any]):
    """Images (K, C, H, W) per row into one (rows * H, K * W[, 3]) array with 1-pixel gaps."""
    import numpy as np

    k = max(r.shape[0] for r in rows)
    c, h, w = rows[0].shape[1:]
    canvas = np.full((len(rows) * (h + 1) - 1, k * (w + 1) - 1, c), np.nan)
    for i, imgs in enumerate(rows):
        arr = imgs.detach().cpu().double().clamp(-1, 1).numpy().transpose(0, 2, 3, 1)
        for j, img in enumerate(arr):
            canvas[i * (h + 1) : i * (h + 1) + h, j * (w + 1) : j * (w + 1) + w] = img
    return canvas[..., 0] if c == 1 else (canvas + 1) / 2


def plot_sample_grid(rows: Sequence[tuple[str, Any]], path: Path, title: str) -> None:
    """One labelled row of images per (label, images (K, C, H, W) in [-1, 1]); single-channel
    images are drawn dark on light."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    canvas = _mosaic([imgs for _, imgs in rows])
    h = rows[0][1].shape[-2]
    fig, ax = plt.subplots(figsize=(0.5 + canvas.shape[1] / 14, 0.6 + canvas.shape[0] / 14))
    cmap = matplotlib.colormaps["gray_r"].with_extremes(bad="white")
    ax.imshow(canvas, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_yticks([i * (h + 1) + h / 2 - 0.5 for i in range(len(rows))])
    ax.set_yticklabels([label for label, _ in rows], fontsize=8)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


class SampleCollector:
    """``compare(on_samples=...)``: keeps the first ``columns`` samples of every run (the same
    x_T rows in every run), for ``write_sample_grids``."""

    def __init__(self, columns: int = GRID_COLUMNS) -> None:
        self.columns = columns
        self.runs: list[tuple[str, int, Any]] = []

    def __call__(self, label: str, nfe: int, x: Any) -> None:
        self.runs.append((label, nfe, x[: self.columns].detach().cpu()))


def _filename(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "+-_" else "_" for ch in label)


def write_sample_grids(
    collector: SampleCollector, records: Sequence[Record], out: str | Path
) -> list[Path]:
    """``grids/<solver>.png`` (one row per budget) and ``grids/nfe_<budget>.png`` (one row per
    solver) under ``out``; every row starts from the same x_T, and the first row is the
    converged reference. Written only for image-shaped samples (C, H, W) with C in {1, 3}."""
    runs = [r for r in collector.runs if r[0] != "reference"]
    refs = [r for r in collector.runs if r[0] == "reference"]
    if not runs or runs[0][2].dim() != 4 or runs[0][2].shape[1] not in (1, 3) or not refs:
        return []
    folder = check_output_dir(Path(out) / "grids")
    ref_row = (f"reference ({refs[0][1]} NFE)", refs[0][2])
    budget = {(r.solver, r.nfe): r.budget for r in records}
    written = []
    for solver in dict.fromkeys(label for label, _, _ in runs):
        rows = [ref_row] + [(f"NFE {nfe}", x) for s, nfe, x in runs if s == solver]
        path = folder / f"{_filename(solver)}.png"
        plot_sample_grid(rows, path, f"{solver}: the same x_T in every row")
        written.append(path)
    for b in sorted(set(budget.values())):
        rows = [ref_row] + [(f"{s} ({nfe})", x) for s, nfe, x in runs if budget.get((s, nfe)) == b]
        path = folder / f"nfe_{b:04d}.png"
        plot_sample_grid(rows, path, f"budget {b} NFE: the same x_T in every row")
        written.append(path)
    return written
