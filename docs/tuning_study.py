"""The study behind docs/tuning.md: grids tuned by ``tune_grid`` against the named grids.

    python docs/tuning_study.py run MODEL SEED      # MODEL: digits, gmm2d or gmm8d
        every solver of SOLVERS at every NFE of BUDGETS: tune_grid (128 training starts, 64
        on digits; 200 Adam steps at lr 0.05), held-out coupled error of the tuned and the
        named grids (512 starts; digits: also the evaluator's metrics on 4 x 128); writes
        docs/findings/tuning/MODEL_seedSEED.json and the tuned grid files beside it
    python docs/tuning_study.py table               # the markdown tables of docs/tuning.md
    python docs/tuning_study.py plot                # docs/findings/tuning/grids.png

Each run is deterministic under its seed (tuning and held-out starts come from it).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde.commands.tune_report import held_out_metrics
from scoresde.core.grids import GRIDS
from scoresde.evaluation.estimates import estimate
from scoresde.evaluation.targets import TARGETS
from scoresde.sample import default_eps

OUT = Path(__file__).parent / "findings" / "tuning"
SOLVERS = ("unipc", "dpm_solver++:order=2", "dpm_solver++:order=3", "deis", "ipndm")
BUDGETS = (4, 5, 6, 8, 10)
SEEDS = (0, 1)
SAMPLES = {"digits": 64, "gmm2d": 128, "gmm8d": 128}  # training starts (digits: the CPU budget)
HELD_OUT, ITERATIONS = 512, 200


def model_of(name: str) -> tuple[sd.ModelSpec, str]:
    """(spec, label): the digits model, or a built-in mixture with its exact score on the
    linear VP SDE that ``scoresde compare`` samples it on."""
    if name == "digits":
        return sd.load_model("digits"), "digits"
    sde = sd.VPSDE(sd.LinearSchedule())
    target = TARGETS[name]()
    return sd.ModelSpec(target.exact_score(sde), sde, (target.dim,)), name


def run(name: str, seed: int) -> None:
    spec, label = model_of(name)
    OUT.mkdir(parents=True, exist_ok=True)
    rows, teachers = [], {}
    for solver in SOLVERS:
        for nfe in BUDGETS:
            held: dict[str, torch.Tensor] = {}
            keep = held.__setitem__
            start = time.perf_counter()
            tuned = sd.tune_grid(spec, solver, nfe, samples=SAMPLES[label], held_out=HELD_OUT,
                                 iterations=ITERATIONS, seed=seed, teachers=teachers,
                                 on_held_out=lambda k, x, keep=keep: keep(k, x.cpu()))  # fmt: skip
            wall = time.perf_counter() - start
            tuned.model = label
            safe = solver.replace(":", "_").replace("=", "")
            tuned.save(OUT / f"{label}_seed{seed}_{safe}_nfe{nfe}.json")
            rows.append({
                "solver": solver, "nfe": tuned.nfe, "steps": tuned.steps, "init": tuned.init,
                "grid": tuned.grid.tolist(), "train": tuned.train_error,
                "tuned": [tuned.held_out_error, tuned.held_out_stderr], "named": tuned.named,
                "metrics": held_out_metrics(spec, held), "wall_s": wall,
            })  # fmt: skip
            print(f"{label} seed {seed} {solver} {nfe}: tuned {tuned.held_out_error:.4f}, "
                  f"best named {min(v[0] for v in tuned.named.values()):.4f} ({wall:.0f} s)",
                  flush=True)  # fmt: skip
    (OUT / f"{label}_seed{seed}.json").write_text(json.dumps(rows, indent=1))


def _load(label: str, seed: int) -> list[dict] | None:
    path = OUT / f"{label}_seed{seed}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def table() -> str:
    """Per model, solver and NFE at both seeds: the best named grid's held-out coupled error,
    the tuned grid's, their ratio, and (digits) FD of both. "v": the tuned grid is lower by
    more than 2 standard errors of the difference at that seed."""
    lines = []
    for label in ("digits", "gmm2d", "gmm8d"):
        runs = {seed: _load(label, seed) for seed in SEEDS}
        if not all(runs.values()):
            continue
        fd = "fd" in (runs[SEEDS[0]][0]["metrics"].get("tuned") or {})
        head = (
            "| solver | NFE | "
            + " | ".join(
                f"seed {s}: best named | tuned | ratio" + (" | FD named / tuned" if fd else "")
                for s in SEEDS
            )
            + " |"
        )
        lines += [f"**{label}** (held-out coupled error, mean ± s.e. over {HELD_OUT} starts)",
                  "", head, "|" + "---|" * (2 + len(SEEDS) * (4 if fd else 3))]  # fmt: skip
        for i, row0 in enumerate(runs[SEEDS[0]]):
            cells = []
            for seed in SEEDS:
                row = runs[seed][i]
                rule = min(row["named"], key=lambda k: row["named"][k][0])
                (bn, bse), (tn, tse) = row["named"][rule], row["tuned"]
                mark = " v" if tn + 2 * math.hypot(tse, bse) < bn else ""
                cells += [f"{bn:.3f} ± {bse:.3f} ({rule})", f"{tn:.3f} ± {tse:.3f}{mark}",
                          f"{tn / bn:.2f}"]  # fmt: skip
                if fd:
                    named_fd = estimate(row["metrics"][rule]["fd"])
                    tuned_fd = estimate(row["metrics"]["tuned"]["fd"])
                    cells.append(f"{named_fd.mean:.1f} ± {named_fd.se:.1f} / "
                                 f"{tuned_fd.mean:.1f} ± {tuned_fd.se:.1f}")  # fmt: skip
            lines.append(f"| {row0['solver']} | {row0['nfe']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot() -> Path:
    """The tuned grids of seed 0 against the named ones, in lambda = log(m/s), per model
    and solver at 6 NFE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for label in ("digits", "gmm2d", "gmm8d") if _load(label, 0)]
    fig, axes = plt.subplots(1, len(labels), figsize=(5 * len(labels), 4), squeeze=False)
    for ax, label in zip(axes[0], labels, strict=True):
        spec, _ = model_of(label)
        rows = [r for r in _load(label, 0) if r["nfe"] == 6]
        names = [f"named: {rule}" for rule in GRIDS] + [f"tuned: {r['solver']}" for r in rows]
        eps = default_eps(spec.sde)
        grids = [sd.make_time_grid(spec.sde, 6, rule, eps)[:-1] for rule in GRIDS]
        grids += [torch.tensor(r["grid"], dtype=torch.float64) for r in rows]
        for y, (name, grid) in enumerate(zip(names, grids, strict=True)):
            lam = (0.5 * spec.sde.log_snr(grid)).tolist()
            ax.plot(lam, [y] * len(lam), "o-", ms=4, color="0.5" if name[0] == "n" else "C0")
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xlabel("lambda = log(m / s)")
        ax.set_title(f"{label}: 6 NFE grids (seed 0)")
    fig.tight_layout()
    path = OUT / "grids.png"
    fig.savefig(path, dpi=110)
    return path


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "run":
        run(sys.argv[2], int(sys.argv[3]))
    elif command == "table":
        print(table())
    elif command == "plot":
        print(plot())
    else:
        raise SystemExit(__doc__)
