"""``scoresde tune``: tune a grid on a model, write the grid file, and print what it gains.

The table gives, on held-out x_T, every named grid and the tuned one: the coupled error to
the converged ODE teacher (mean +- standard error over the held-out starts) and, for a model
with an evaluator (a Fréchet distance to held-out data, say), its data metrics over 4
replicates of the held-out samples (mean +- standard error).
"""

from __future__ import annotations

import time
from pathlib import Path

from torch import Tensor

from scoresde.core.grids import GRIDS
from scoresde.evaluation.estimates import estimate
from scoresde.evaluation.grid_search import tune_grid
from scoresde.models import ModelSpec, load_model

REPLICATES = 4  # held-out samples split for the evaluator's metrics and their s.e.


def tune_report(
    model: str,
    solver: str,
    nfe: int,
    *,
    out: str | Path = "grid.json",
    seed: int = 0,
    samples: int = 128,
    held_out: int = 512,
    iterations: int = 200,
    init: str = "best",
    network_times: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> str:
    spec = load_model(model)
    held: dict[str, Tensor] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="tune", unit="run", total=iterations + 2 * len(GRIDS) + 2)
    start = time.perf_counter()
    try:
        tuned = tune_grid(
            spec,
            solver,
            nfe,
            samples=samples,
            held_out=held_out,
            iterations=iterations,
            init=init,
            network_times=network_times,
            seed=seed,
            device=device,
            on_run=None if bar is None else (lambda: bar.update(1)),
            on_held_out=lambda label, x: held.__setitem__(label, x.detach().cpu()),
        )
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - start
    tuned.model = model
    path = tuned.save(out)
    rows = {**{rule: tuned.named[rule] for rule in GRIDS}, "tuned": [
        tuned.held_out_error, tuned.held_out_stderr]}  # fmt: skip
    metrics = held_out_metrics(spec, held)
    evaluator = spec.evaluator
    names = list(evaluator.metrics) if evaluator is not None else []
    head = f"{'grid':<10} {'coupled (held out)':>20}" + "".join(f" {m:>18}" for m in names)
    lines = [
        f"{solver} at {tuned.nfe} NFE ({tuned.steps} steps) on {model}: "
        f"{tuned.samples} training and {tuned.held_out} held-out x_T, seed {seed}",
        "",
        head,
    ]
    for label, (err, se) in rows.items():
        cells = "".join(f" {_mean_se(metrics.get(label, {}).get(m)):>18}" for m in names)
        lines.append(f"{label:<10} {f'{err:.4f} ± {se:.4f}':>20}{cells}")
    best = min(tuned.named, key=lambda r: tuned.named[r][0])
    ratio = tuned.held_out_error / tuned.named[best][0]
    lines += [
        "",
        f"tuned / best named ({best}): {ratio:.2f} in coupled error; "
        f"started from {tuned.init}; {tuned.evaluations} solver runs in {wall:.0f} s",
        f"grid (t): {', '.join(f'{t:.4f}' for t in tuned.grid.tolist())}",
        *(
            [f"network times (t'): {', '.join(f'{t:.4f}' for t in tuned.network_grid.tolist())}"]
            if tuned.network_grid is not None
            else []
        ),
        f"written to {path}; use it as --solver '{solver}:grid=file:{path}' in compare and "
        "generate",
    ]
    return "\n".join(lines)


def held_out_metrics(spec: ModelSpec, held: dict[str, Tensor]) -> dict[str, dict[str, list]]:
    """{grid label: {metric: values}}: the model's evaluator on REPLICATES equal parts of each
    grid's held-out samples (empty without an evaluator)."""
    if spec.evaluator is None:
        return {}
    out = {}
    for label, x in held.items():
        n = x.shape[0] // REPLICATES
        out[label] = spec.evaluator(x[: n * REPLICATES].reshape(REPLICATES, n, *x.shape[1:]))
    return out


def _mean_se(values: list[float] | None) -> str:
    if not values:
        return "-"
    e = estimate(values)
    return f"{e.mean:.3g} ± {e.se:.2g}"
