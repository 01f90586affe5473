"""Presenting ``compare``'s records: a table, the floor summary, JSON, CSV and the plot.

The JSON schema is in docs/results-schema.md.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from scoresde.evaluation.compare import (
    SCHEMA_VERSION,
    Record,
    convergence_orders,
    fewest_nfe_at_floor,
)
from scoresde.output_dir import atomic_write, check_output_dir

TABLE_FORMATS = {
    "sw1": ".4f",
    "mmd": ".1e",
    "mode_err": ".4f",
    "cov_err": ".4f",
    "xent": ".3f",
    "fd": ".2f",
    "label_dev": ".2f",
    "unsure": ".3f",
    "nn_train": ".3f",
    "coupled": ".1e",
}
GRID_COLUMNS = 16  # samples per row of the sample grids (the first x_T rows)


def _cell(mean: float, se: float, fmt: str) -> str:
    if math.isnan(mean):
        return "-"
    if math.isnan(se):
        return format(mean, fmt)
    return f"{mean:{fmt}}±{se:{fmt}}"


def _row(label: str, means: dict, ses: dict, keys: list[str], widths: dict[str, int]) -> str:
    nan = math.nan
    return label + " ".join(
        f"{_cell(means.get(k, nan), ses.get(k, nan), TABLE_FORMATS[k]):>{widths[k]}}" for k in keys
    )


def format_table(records: Sequence[Record]) -> str:
    """A plain-text table, one row per run: mean ± standard error over the replicates, the
    smallest p-value of its tests against exact sampling, and ``=`` where it is at the floor."""
    lines = []
    width = max([20] + [len(r.solver) + 1 for r in records])
    for target in dict.fromkeys(r.target for r in records):
        rows = sorted((r for r in records if r.target == target), key=lambda r: (r.budget, r.nfe))
        first = rows[0]
        keys = [k for k in TABLE_FORMATS if k in first.metrics]
        widths = {
            k: max(
                [len(k)]
                + [len(_cell(r.metrics[k], r.stderr[k], TABLE_FORMATS[k])) for r in rows]
                + [len(_cell(first.floor[k], first.floor_stderr[k], TABLE_FORMATS[k]))]
            )
            for k in keys
        }
        grids = ", ".join(dict.fromkeys(r.time_grid for r in rows))
        head = f"{'budget':>6} {'solver':<{width}} {'NFE':>5} " + " ".join(
            f"{k:>{widths[k]}}" for k in keys
        )
        head += f" {'min p':>7} {'wall s':>7}"
        lines += [
            f"target {target}  (schedule {first.schedule}, grid {grids}; {first.replicates} "
            f"replicates of n = {first.samples}; mean ± standard error)",
            f"reference: {first.extra.get('reference')}"
            + (
                f"; reverse SDE: {first.extra['sde_reference']}"
                if "sde_reference" in first.extra
                else ""
            ),
            head,
            "-" * len(head),
        ]
        if "exact_sampler" in first.extra:
            ex, ex_se = first.extra["exact_sampler"], first.extra["exact_sampler_stderr"]
            label = f"{'exact':>6} {'target sampler':<{width}} {'':>5} "
            p = first.extra["exact_sampler_p_sw1"]
            lines.append(_row(label, ex, ex_se, keys, widths) + f" {p:7.3f}")
        label = f"{'floor':>6} {'reference (exact flow)':<{width}} {'':>5} "
        lines.append(_row(label, first.floor, first.floor_stderr, keys, widths))
        if "data_floor" in first.extra:
            label = f"{'data':>6} {'held-out digits':<{width}} {'':>5} "
            data, data_se = first.extra["data_floor"], first.extra["data_floor_stderr"]
            lines.append(_row(label, data, data_se, keys, widths))
        for r in rows:
            mark = "=" if r.at_floor else " "
            label = f"{r.budget:>6} {mark}{r.solver:<{width - 1}} {r.nfe:>5} "
            lines.append(
                _row(label, r.metrics, r.stderr, keys, widths)
                + f" {min(r.p_value.values()):7.3f} {r.wall_s:7.2f}"
            )
        lines.append("")
    r0 = records[0]
    k = len(r0.p_value)
    if "exact_sampler" in r0.extra:
        tests = (
            "MMD² against 0 and xent against the target's entropy, the others against the "
            "exact reference's values (Welch); one-sided but xent"
        )
    else:
        tests = (
            "Welch, against the converged reference's values; one-sided but "
            + ", ".join(k for k in r0.p_value if k in ("xent", "nn_train"))
        ).removesuffix(" but ")
    lines.append(
        f"= at the floor: none of the {k} metrics differs from exact sampling (t-tests over the "
        f"{r0.replicates} replicates: {tests}; every p >= "
        f"{_alpha(records):g}/{k}). min p: the smallest of the {k} p-values. coupled: "
        "E|x - x_ref| from the same x_T (and Brownian path), '-' where the solver has no "
        "pathwise limit."
        + (
            " exact: the target's own sampler (p: Welch test of its SW1 against the reference's)."
            if "exact_sampler" in r0.extra
            else ""
        )
        + " Adaptive solvers: NFE is the mean per sample."
    )
    if "data_floor" in r0.extra:
        lines.append(
            "data: real data scored like the samples at the same n (the data floor: fd of "
            "training digits against the test set; label_dev, unsure and nn_train of test "
            "digits). fd: Fréchet distance in the classifier's features to the test set; "
            "label_dev: largest |share of a class - 1/10| in percentage points; unsure: share "
            "with class probability <= 0.9; nn_train: mean distance to the nearest training "
            "image (tested two-sided: lower than held-out data is memorisation)."
        )
    return "\n".join(lines)


def _alpha(records: Sequence[Record]) -> float:
    return records[0].extra["alpha"]


def format_floor_summary(records: Sequence[Record]) -> str:
    """One line per solver: the fewest NFE at the floor per target (from there on every run
    is), and the measured convergence order of its coupled error."""
    first = fewest_nfe_at_floor(records)
    orders = convergence_orders(records)
    targets = list(dict.fromkeys(r.target for r in records))
    solvers = list(dict.fromkeys(r.solver for r in records))
    most: dict[tuple[str, str], int] = {}
    for r in records:
        most[(r.target, r.solver)] = max(r.nfe, most.get((r.target, r.solver), 0))
    width = max([20] + [len(s) for s in solvers])
    lines = [
        "fewest NFE at the floor (no metric significantly different from exact sampling, at "
        "that NFE and every larger one run), and the order p of coupled error ~ NFE^-p",
        f"{'solver':<{width}} " + " ".join(f"{t:>10} {'order':>5}" for t in targets),
    ]
    for solver in solvers:
        cells = []
        for t in targets:
            if (t, solver) not in first:
                cells.append(f"{'':>10} {'':>5}")
                continue
            nfe, p = first[(t, solver)], orders[(t, solver)]
            at = f"{nfe}" if nfe is not None else f">{most[(t, solver)]}"
            cells.append(f"{at:>10} " + (f"{p:5.2f}" if p is not None else f"{'-':>5}"))
        lines.append(f"{solver:<{width}} " + " ".join(cells))
    return "\n".join(lines)


def summary(records: Sequence[Record]) -> dict[str, Any]:
    """The verdicts as plain data: {target: {solver: {"fewest_nfe_at_floor", "order"}}}."""
    first, orders = fewest_nfe_at_floor(records), convergence_orders(records)
    out: dict[str, Any] = {}
    for (target, solver), nfe in first.items():
        out.setdefault(target, {})[solver] = {
            "fewest_nfe_at_floor": nfe,
            "order": orders[(target, solver)],
        }
    return out


def records_to_json(records: Sequence[Record], settings: dict[str, Any]) -> str:
    return json.dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "settings": settings,
            "summary": summary(records),
            "records": [asdict(r) for r in records],
        },
        indent=2,
        allow_nan=True,
    )


CSV_FIELDS = (
    "target",
    "solver",
    "config",
    "budget",
    "nfe",
    "steps",
    "schedule",
    "time_grid",
    "samples",
    "replicates",
    "seed",
    "wall_s",
    "at_floor",
)


def records_to_csv(records: Sequence[Record]) -> str:
    buf = io.StringIO()
    keys = list(records[0].metrics) if records else []
    writer = csv.writer(buf)
    writer.writerow(
        list(CSV_FIELDS)
        + keys
        + [f"se_{k}" for k in keys]
        + [f"p_{k}" for k in keys if k in records[0].p_value]
        + [f"floor_{k}" for k in keys]
    )
    for r in records:
        row = [getattr(r, f) for f in CSV_FIELDS]
        row[CSV_FIELDS.index("wall_s")] = f"{r.wall_s:.6f}"
        row[CSV_FIELDS.index("at_floor")] = int(r.at_floor)
        writer.writerow(
            row
            + [repr(r.metrics[k]) for k in keys]
            + [repr(r.stderr[k]) for k in keys]
            + [repr(r.p_value[k]) for k in keys if k in r.p_value]
            + [repr(r.floor[k]) for k in keys]
        )
    return buf.getvalue()


FAMILIES = {  # solver name -> (family, line style)
    "ddpm_ancestral": "SDE",
    "euler_maruyama": "SDE",
    "reverse_diffusion": "SDE",
    "pc": "SDE",
    "annealed_langevin": "SDE",
    "adaptive_sde": "SDE",
    "torchsde": "SDE",
    "sde_dpm_solver++": "exponential",
    "ode_euler": "ODE",
    "ode_heun": "ODE",
    "ode_rk45": "ODE",
    "ode_dopri5": "ODE",
    "edm_heun": "ODE",
    "ddim": "exponential",
    "dpm_solver": "exponential",
    "dpm_solver++": "exponential",
    "dpm_solver_single": "exponential",
}
FAMILY_STYLE = {"SDE": "-", "ODE": "--", "exponential": ":", "other": "-."}
MARKERS = "osD^v<>pP*XhH8d"
# distinct hues (matplotlib's tab10 and the dark half of tab20b): shades of one colour per
# family were too alike to tell apart; the family is carried by the line style instead
COLOURS = ("tab10", range(10)), ("tab20b", range(0, 20, 4)), ("tab20b", range(2, 20, 4))


def _styles(solvers: list[str]) -> dict[str, dict[str, Any]]:
    """A distinct (colour, marker) per solver; the line style says its family."""
    import matplotlib

    colours = [matplotlib.colormaps[name](i) for name, idx in COLOURS for i in idx]
    families: dict[str, list[str]] = {}
    for s in solvers:
        families.setdefault(FAMILIES.get(s.split(":")[0], "other"), []).append(s)
    out, k = {}, 0
    for family, members in families.items():
        for s in members:
            out[s] = {
                "color": colours[k % len(colours)],
                "marker": MARKERS[k % len(MARKERS)],
                "linestyle": FAMILY_STYLE[family],
                "label": f"{s} [{family}]",
            }
            k += 1
    return out


def plot_error_vs_nfe(records: Sequence[Record], path: Path) -> None:
    """Write ``error_vs_nfe_figure(records)`` to ``path`` (PNG)."""
    import matplotlib.pyplot as plt

    fig = error_vs_nfe_figure(records)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def error_vs_nfe_figure(records: Sequence[Record]):
    """Three panels per target: SW1 to the target (mean ± s.e., the grey band is the exact
    reference's mean ± 2 s.e.), the coupled error with reference slopes NFE^-1, ^-2, ^-3, and
    MMD^2 on a symmetric-log axis that keeps negative estimates; a model's data metric adds a
    fourth. Returns the matplotlib figure (one legend for all panels, at the right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(r.target for r in records))
    solvers = list(dict.fromkeys(r.solver for r in records))
    style = _styles(solvers)
    on_target = "exact_sampler" in records[0].extra  # analytic target; else a model's reference
    panels = ("sw1", "coupled", "mmd") + (("fd",) if "fd" in records[0].metrics else ())
    fig, axes = plt.subplots(
        len(panels),
        len(targets),
        squeeze=False,
        figsize=(5.2 * len(targets) + 3.2, 3.7 * len(panels)),
    )
    for j, target in enumerate(targets):
        rows = [r for r in records if r.target == target]
        for i, metric in enumerate(panels):
            ax = axes[i][j]
            for solver in solvers:
                pts = sorted(
                    (r.nfe, r.metrics[metric], r.stderr[metric])
                    for r in rows
                    if r.solver == solver and math.isfinite(r.metrics[metric])
                )
                if metric != "mmd":
                    pts = [p for p in pts if p[1] > 0]
                if not pts:
                    continue
                n, m, se = zip(*pts, strict=True)
                se = [0.0 if math.isnan(s) else s for s in se]
                ax.errorbar(n, m, yerr=se, ms=4, lw=1, capsize=2, **style[solver])
            ax.set_xscale("log")
            _budget_ticks(ax, rows)
            floor, fse = rows[0].floor[metric], rows[0].floor_stderr[metric]
            if metric == "coupled":
                _slopes(ax, rows)
                ax.set_yscale("log")
                ax.set_ylabel("coupled error E|x - x_ref|")
            elif metric == "sw1":
                band = "exact reference" if on_target else "reference"
                ax.axhspan(floor - 2 * fse, floor + 2 * fse, color="grey", alpha=0.3,
                           label=f"{band} ± 2 s.e.")  # fmt: skip
                ax.set_yscale("log")
                ax.set_ylabel("sliced W1 to the " + ("target" if on_target else "ODE reference"))
            elif metric == "fd":
                ax.axhspan(floor - 2 * fse, floor + 2 * fse, color="grey", alpha=0.3)
                data = rows[0].extra.get("data_floor", {}).get("fd")
                if data is not None:
                    ax.axhline(data, color="black", lw=0.8, ls="--", label="held-out data")
                ax.set_yscale("log")
                ax.set_ylabel("Fréchet distance to test digits")
            else:
                ax.axhspan(floor - 2 * fse, floor + 2 * fse, color="grey", alpha=0.3)
                ax.axhline(0.0, color="black", lw=0.6)
                ax.set_yscale("symlog", linthresh=max(1e-5, 2 * fse))
                ax.set_ylabel("MMD² (unbiased; may be < 0)")
            ax.set_xlabel("score evaluations (NFE)")
            ax.set_title(f"{target}: {metric}")
            ax.grid(True, which="both", alpha=0.3)
    keep = {}  # every labelled artist of the first column, once (solvers, band, slopes, data)
    for row in axes:
        for h, lab in zip(*row[0].get_legend_handles_labels(), strict=True):
            keep.setdefault(lab, h)
    fig.legend(keep.values(), keep.keys(), loc="center left", bbox_to_anchor=(0.995, 0.5),
               fontsize=7, frameon=False)  # fmt: skip
    fig.tight_layout()
    return fig


def _budget_ticks(ax, rows: Sequence[Record]) -> None:
    """Plain-number ticks at the NFE budgets (not 2x10^1 on the log axis)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    budgets = sorted({r.budget for r in rows if r.budget})
    if budgets:
        ax.xaxis.set_major_locator(FixedLocator(budgets))
    formatter = ScalarFormatter()
    formatter.set_scientific(False)
    ax.xaxis.set_major_formatter(formatter)
    ax.xaxis.set_minor_formatter(NullFormatter())


def _slopes(ax, rows: Sequence[Record]) -> None:
    """Dotted guide lines C NFE^-p for p = 1, 2, 3 through the largest finite coupled error."""
    pts = [(r.nfe, r.metrics["coupled"]) for r in rows if math.isfinite(r.metrics["coupled"])]
    pts = [p for p in pts if p[1] > 0]
    if not pts:
        return
    lo, hi = min(n for n, _ in pts), max(n for n, _ in pts)
    e0 = max(e for n, e in pts if n == lo)
    for p, shade in ((1, "0.2"), (2, "0.45"), (3, "0.7")):
        ax.plot([lo, hi], [e0, e0 * (hi / lo) ** -p], color=shade, lw=0.8, ls=(0, (1, 2)),
                label=f"slope NFE^-{p}")  # fmt: skip


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
    images are drawn dark on light (as the digits are)."""
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


def write_results(
    records: Sequence[Record], out: str | Path, settings: dict[str, Any]
) -> list[Path]:
    """results.json, results.csv and error_vs_nfe.png in ``out``, each written atomically."""
    path = check_output_dir(out)
    png_tmp = path / ".error_vs_nfe.tmp.png"
    plot_error_vs_nfe(records, png_tmp)
    written = []
    for name, data in (
        ("results.json", records_to_json(records, settings).encode()),
        ("results.csv", records_to_csv(records).encode()),
    ):
        atomic_write(path / name, data)
        written.append(path / name)
    os.replace(png_tmp, path / "error_vs_nfe.png")
    written.append(path / "error_vs_nfe.png")
    return written
