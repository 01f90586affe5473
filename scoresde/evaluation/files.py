"""``compare``'s records as files: results.json, results.csv and the plot, written atomically.

The JSON schema is in docs/results-schema.md.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from scoresde.core.output_dir import atomic_write, check_output_dir
from scoresde.evaluation.plots import plot_error_vs_nfe
from scoresde.evaluation.record import Record
from scoresde.evaluation.settings import SCHEMA_VERSION
from scoresde.evaluation.verdicts import (
    convergence_orders,
    fewest_nfe_at_floor,
    fewest_nfe_pathwise,
)


def summary(records: Sequence[Record]) -> dict[str, Any]:
    """The verdicts as plain data: {target: {solver: {"fewest_nfe_at_floor",
    "fewest_nfe_pathwise", "order"}}}."""
    first, orders = fewest_nfe_at_floor(records), convergence_orders(records)
    pathwise = fewest_nfe_pathwise(records)
    out: dict[str, Any] = {}
    for (target, solver), nfe in first.items():
        out.setdefault(target, {})[solver] = {
            "fewest_nfe_at_floor": nfe,
            "fewest_nfe_pathwise": pathwise[(target, solver)],
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
    "verdict",
    "replicates_to_decide",
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
