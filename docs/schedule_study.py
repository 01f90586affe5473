"""The study behind docs/schedules.md: the five digits models shipped in
scoresde/digits/study (built-in names digits-MODEL), each trained by ``scoresde train``
under its own path, prediction and loss, measured alike.

    python docs/schedule_study.py run MODEL SEED    # MODEL: ddpm-linear, ..., rectified-flow
        1. scoresde compare --model DIR at 10, 20, 50, 100 NFE for SOLVERS, every solver on
           the grid uniform in log-SNR (so only the model differs between models), with the
           model's compare defaults (5 replicates of 128, ODE and SDE references); writes
           docs/schedules/results/MODEL/seedSEED/ (results.json, the table, sample grids);
        2. the quality bar: each solver at 100 NFE on 1000 samples (FD, label balance,
           unsure share);
        3. UniPC at 6 NFE: tune_grid (64 training starts, 200 Adam steps) against the named
           grids on 512 held-out starts;
        4. bits/dim of the 450 test digits by the probability-flow ODE (and the DDPM bound
           for a table), dequantisation and the Hutchinson probe drawn from SEED;
        all into docs/schedules/results/MODEL_seedSEED.json.
    python docs/schedule_study.py likelihood MODEL SEED    # step 4 alone, into that file
    python docs/schedule_study.py tune MODEL SEED          # step 3 alone, into that file
    python docs/schedule_study.py table             # the markdown tables of docs/schedules.md
    python docs/schedule_study.py plot              # loss curves and 100-NFE sample grids

Each run is deterministic under its seed. The floor of the quality bar (train versus test
digits' FD) is the shipped model's: docs/digits.md.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from pathlib import Path

import scipy.stats
import torch

import scoresde as sd
from scoresde.commands.cli import main
from scoresde.digits.likelihood import digits_likelihood
from scoresde.evaluation.estimates import Difference, Estimate
from scoresde.evaluation.specs import SolverSpec

HERE = Path(__file__).parent
MODELS = HERE.parent / "scoresde" / "digits" / "study"
OUT = HERE / "schedules" / "results"
ORDER = ("ddpm-linear", "ddpm-cosine", "edm", "vp-linear-likelihood", "rectified-flow")
SOLVERS = ("ddpm_ancestral", "euler_maruyama", "ode_heun", "dpm_solver++:order=3")
GRID = "logsnr"
BUDGETS = (10, 20, 50, 100)
SEEDS = (0, 1)
ALPHA = 0.05
QUALITY_SAMPLES, QUALITY_NFE = 1000, 100
# the shipped model's bar (docs/digits.md): >= 90 % sure, label histogram within 3 points of
# uniform, FD within 3x the train-versus-test floor at 1000 samples
BAR = {"unsure": 0.10, "label_dev": 3.0, "fd_factor": 3.0}


def _spec(solver: str) -> str:
    return f"{solver}:grid={GRID}"


def run(name: str, seed: int) -> None:
    model = MODELS / name
    folder = OUT / name / f"seed{seed}"
    result: dict = {"model": name, "seed": seed, "grid": GRID}

    start = time.perf_counter()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["compare", "--model", str(model), "--solvers", ",".join(map(_spec, SOLVERS)),
                     "--nfe", ",".join(map(str, BUDGETS)), "--seed", str(seed),
                     "--out", str(folder), "--no-progress"])  # fmt: skip
    assert code == 0, printed.getvalue()
    (folder / "table.txt").write_text(printed.getvalue())
    result["compare_seconds"] = time.perf_counter() - start
    print(f"{name} seed {seed}: compare {result['compare_seconds']:.0f} s", flush=True)

    spec = sd.load_model(str(model))
    quality = {}
    for solver in SOLVERS:
        begun = time.perf_counter()
        gen = torch.Generator().manual_seed(seed)
        sol = sd.sample(spec.score, spec.sde, (QUALITY_SAMPLES, *spec.shape),
                        solver=SolverSpec.parse(solver).build(), nfe=QUALITY_NFE,
                        time_grid=GRID, generator=gen)  # fmt: skip
        quality[solver] = {**spec.evaluator.score(sol.samples), "nfe": sol.nfe,
                           "seconds": time.perf_counter() - begun}  # fmt: skip
        print(f"  {solver}: {quality[solver]}", flush=True)
    result["quality"] = quality
    result["fd_floor"] = spec.evaluator.floor(QUALITY_SAMPLES, 1)["fd"][0]

    result["unipc6"] = tune(spec, name, seed)

    result.update(likelihood(spec, seed))
    (OUT / f"{name}_seed{seed}.json").write_text(json.dumps(result, indent=1) + "\n")


def tune(spec: sd.ModelSpec, name: str, seed: int) -> dict:
    """UniPC at 6 NFE: the tuned grid and the named ones on 512 held-out starts."""
    begun = time.perf_counter()
    tuned = sd.tune_grid(spec, "unipc", 6, samples=64, held_out=512, seed=seed)
    tuned.save(OUT / name / f"unipc6_seed{seed}.json")
    out = {
        "tuned": [tuned.held_out_error, tuned.held_out_stderr],
        "named": tuned.named,
        "seconds": time.perf_counter() - begun,
    }
    print(f"  unipc 6 NFE: {out}", flush=True)
    return out


def likelihood(spec: sd.ModelSpec, seed: int) -> dict:
    """Test bits/dim by the ODE (on a zero-SNR path it ends where m = 1e-4), and the DDPM
    bound for a table."""
    begun = time.perf_counter()
    lk = digits_likelihood(spec, seed=seed)
    bpd = {k: [v.mean, v.se] for k, v in lk.summary().items()}
    print(f"  bits/dim: {bpd}", flush=True)
    return {"bits_per_dim": bpd, "likelihood_seconds": time.perf_counter() - begun}


def _load(name: str, seed: int) -> dict | None:
    file = OUT / f"{name}_seed{seed}.json"
    return json.loads(file.read_text()) if file.is_file() else None


def _records(name: str, seed: int) -> dict[tuple[str, int], dict]:
    file = OUT / name / f"seed{seed}" / "results.json"
    if not file.is_file():
        return {}
    records = json.loads(file.read_text())["records"]
    return {(r["solver"].split(":grid=")[0], r["budget"]): r for r in records}


def _better_p(a: dict, b: dict, metric: str) -> float:
    """One-sided Welch p-value that run ``a``'s metric is lower than run ``b``'s."""
    ea = Estimate(a["metrics"][metric], a["stderr"][metric], a["replicates"])
    eb = Estimate(b["metrics"][metric], b["stderr"][metric], b["replicates"])
    diff = Difference.between(ea, eb, None)
    if diff.se == 0:
        return 0.0 if diff.d < 0 else 1.0
    return float(scipy.stats.t.cdf(diff.d / diff.se, diff.df))


def _winner(runs: dict[str, dict], metric: str) -> str:
    """The model whose metric is lower than every other's (Welch, p < ALPHA), or ""."""
    best = min(runs, key=lambda k: runs[k]["metrics"][metric])
    others = [k for k in runs if k != best]
    return best if all(_better_p(runs[best], runs[k], metric) < ALPHA for k in others) else ""


def _both(runs: list[dict], value) -> str:
    """``value(run)`` at each seed, "seed 0 / seed 1"."""
    return " / ".join(value(r) for r in runs)


def _rows(header: str, cells: list[list[str]]) -> list[str]:
    head = "| " + " | ".join(header.split(",")) + " |"
    rule = "|" + "---|" * len(header.split(","))
    return [head, rule] + ["| " + " | ".join(c) + " |" for c in cells]


def table() -> str:
    names = [n for n in ORDER if all(_load(n, seed) for seed in SEEDS)]
    runs = {n: [_load(n, seed) for seed in SEEDS] for n in names}
    out = ["### The models", ""]
    cells = []
    for n in names:
        meta = json.loads((MODELS / n / "model.json").read_text())
        tr, loss = meta["training"], meta["test_loss"]
        held = f"{loss['mean']:.4f} ± {loss['stderr']:.4f}"
        cells.append([n, meta["path"], meta["prediction"], tr["weighting"], tr["t_sampler"],
                      held, f"{tr['seconds']:.0f}"])  # fmt: skip
    out += _rows("model,path,prediction,weighting,t,held-out loss,train s", cells)

    floor = runs[names[0]][0]["fd_floor"]
    out += ["", f"### The quality bar: {QUALITY_SAMPLES} samples at {QUALITY_NFE} NFE, grid "
            f"{GRID}; seed 0 / seed 1", ""]  # fmt: skip
    cells = []
    for n in names:
        for solver in SOLVERS:
            q = [r["quality"][solver] for r in runs[n]]
            cells.append([n, solver,
                          " / ".join(f"{x['fd']:.2f}" for x in q),
                          " / ".join(f"{x['unsure']:.3f}" for x in q),
                          " / ".join(f"{x['label_dev']:.1f}" for x in q),
                          " / ".join("yes" if _passes(x, floor) else "no" for x in q)])  # fmt: skip
    out += _rows("model,solver,FD,unsure,label dev.,passes", cells)
    out += ["", f"FD floor (train versus test digits, {QUALITY_SAMPLES} samples): {floor:.2f}; "
            f"the bar is FD <= {BAR['fd_factor'] * floor:.2f}."]  # fmt: skip

    recs = {(n, seed): _records(n, seed) for n in names for seed in SEEDS}
    for metric, caption in (("fd", "FD"), ("coupled", "coupled error to the model's own ODE")):
        out += ["", f"### {caption}: compare, 5 x 128 samples, grid {GRID}; seed 0 / seed 1", "",
                f"**Bold**: lower than every other model at both seeds (Welch, p < {ALPHA}).",
                ""]  # fmt: skip
        cells = []
        for solver in SOLVERS:
            for nfe in BUDGETS:
                by = {seed: {n: recs[n, seed].get((solver, nfe)) for n in names} for seed in SEEDS}
                if any(r is None for d in by.values() for r in d.values()):
                    continue
                wins = {_winner(by[seed], metric) for seed in SEEDS}
                win = wins.pop() if len(wins) == 1 else ""
                row = [solver, str(nfe)]
                for n in names:
                    v = " / ".join(f"{by[seed][n]['metrics'][metric]:.3g}" for seed in SEEDS)
                    row.append(f"**{v}**" if n == win else v)
                cells.append(row)
        out += _rows("solver,NFE," + ",".join(names), cells)

    out += ["", "### UniPC at 6 NFE: coupled error on 512 held-out starts; seed 0 / seed 1", ""]
    cells = []
    for n in names:
        tuned = [r["unipc6"]["tuned"] for r in runs[n]]
        named = [min(r["unipc6"]["named"].items(), key=lambda kv: kv[1][0]) for r in runs[n]]
        pairs = list(zip(tuned, named, strict=True))
        cells.append([n, " / ".join(f"{t[0]:.3f} ± {t[1]:.3f}" for t in tuned),
                      " / ".join(f"{k} {v[0]:.3f}" for k, v in named),
                      " / ".join(f"{t[0] / v[0]:.2f}" for t, (_, v) in pairs)])  # fmt: skip
    out += _rows("model,tuned,best named grid,tuned / best named", cells)

    out += ["", "### Test bits/dim of the 450 test digits; seed 0 / seed 1", ""]
    cells = []
    for n in names:
        bpd = [r.get("bits_per_dim") for r in runs[n]]
        if None in bpd:
            cells.append([n, "not measured", "-"])
            continue
        cells.append([n] + [
            " / ".join(f"{b[key][0]:.3f} ± {b[key][1]:.3f}" for b in bpd) if key in bpd[0] else "-"
            for key in ("ode", "vlb")
        ])  # fmt: skip
    out += _rows("model,ODE,DDPM bound", cells)
    return "\n".join(out)


def _passes(q: dict, floor: float) -> bool:
    return (q["unsure"] <= BAR["unsure"] and q["label_dev"] <= BAR["label_dev"]
            and q["fd"] <= BAR["fd_factor"] * floor)  # fmt: skip


def plot() -> None:
    import matplotlib.pyplot as plt

    from scoresde.evaluation.sample_grids import plot_sample_grid

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for n in ORDER:
        curve = json.loads((MODELS / n / "model.json").read_text())["loss_curve"]
        steps, loss = [c["step"] for c in curve], [c["loss"] for c in curve]
        ax.plot(steps, [v / loss[-1] for v in loss], label=n)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss / final loss")
    ax.set_title("each model's own objective, relative to its end", fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(OUT / "loss_curves.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    rows = []
    for n in ORDER:
        spec = sd.load_model(str(MODELS / n))
        gen = torch.Generator().manual_seed(0)
        solver = SolverSpec.parse("dpm_solver++:order=3").build()
        sol = sd.sample(spec.score, spec.sde, (16, *spec.shape), solver=solver, nfe=QUALITY_NFE,
                        time_grid=GRID, generator=gen)  # fmt: skip
        rows.append((n, sol.samples))
    plot_sample_grid(
        rows, OUT / "samples.png", "DPM-Solver++ 3M, 100 NFE: the same x_T in every row"
    )


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "run":
        run(sys.argv[2], int(sys.argv[3]))
    elif command in ("likelihood", "tune"):  # (re)measure one part of a finished run
        name, seed = sys.argv[2], int(sys.argv[3])
        result, spec = _load(name, seed), sd.load_model(str(MODELS / name))
        if command == "tune":
            result["unipc6"] = tune(spec, name, seed)
        else:
            result.update(likelihood(spec, seed))
        (OUT / f"{name}_seed{seed}.json").write_text(json.dumps(result, indent=1) + "\n")
    elif command == "table":
        print(table())
    elif command == "plot":
        plot()
    else:
        raise SystemExit(__doc__)
