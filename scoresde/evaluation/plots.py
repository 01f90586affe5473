"""The error-against-NFE plot: one panel per metric and target, a style per solver."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scoresde.evaluation.record import Record
from scoresde.solvers import registry

FAMILY_STYLE = {"SDE": "-", "ODE": "--", "exponential": ":", "other": "-."}

MARKERS = "osD^v<>pP*XhH8d"

# distinct hues (matplotlib's tab10 and the dark half of tab20b): shades of one colour per
# family were too alike to tell apart; the family is carried by the line style instead
COLOURS = ("tab10", range(10)), ("tab20b", range(0, 20, 4)), ("tab20b", range(2, 20, 4))


def _family(spec: str) -> str:
    """The family a solver declares (``Solver.family``), for the spec ``name[:options]``."""
    name = spec.split(":")[0]
    if name not in registry.available():
        return "other"
    return getattr(registry.get(name), "family", "other")


def solver_styles(solvers: list[str]) -> dict[str, dict[str, Any]]:
    """A distinct (colour, marker) per solver; the line style says its family."""
    import matplotlib

    colours = [matplotlib.colormaps[name](i) for name, idx in COLOURS for i in idx]
    families: dict[str, list[str]] = {}
    for s in solvers:
        families.setdefault(_family(s), []).append(s)
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
    style = solver_styles(solvers)
    on_target = "exact_sampler" in records[0].extra  # analytic target; else a model's reference
    data_panels = records[0].extra.get("evaluator", {}).get("panels", {})
    panels = ("sw1", "coupled", "mmd", *(k for k in data_panels if k in records[0].metrics))
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
            elif metric in data_panels:
                ax.axhspan(floor - 2 * fse, floor + 2 * fse, color="grey", alpha=0.3)
                data = rows[0].extra.get("data_floor", {}).get(metric)
                if data is not None:
                    ax.axhline(data, color="black", lw=0.8, ls="--", label="held-out data")
                ax.set_yscale("log")
                ax.set_ylabel(data_panels[metric])
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
