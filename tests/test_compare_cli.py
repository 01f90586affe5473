import csv
import json
import math
import struct

import pytest
import torch

import scoresde as sd
from scoresde import metrics
from scoresde.commands.cli import main
from scoresde.evaluation.settings import METRICS, SDE_TOLERANCES

SMALL = [
    "--target",
    "gmm2d",
    "--solvers",
    "euler_maruyama,ode_heun,ddpm_ancestral",
    "--nfe",
    "5,10",
    "--samples",
    "100",
    "--sde-reference",
    "euler_maruyama:400",
    "--no-progress",
]


def test_compare_end_to_end(tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["compare", *SMALL, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for solver in ("euler_maruyama", "ode_heun", "ddpm_ancestral"):
        assert text.count(solver) >= 2  # one row per budget
    assert "reference: ode_dopri5 float64" in text and "reverse SDE: euler_maruyama" in text
    data = json.loads((out / "results.json").read_text())
    assert data["schema_version"] == 3
    assert len(data["records"]) == 6
    keys = {
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
        "metrics",
        "stderr",
        "p_value",
        "at_floor",
        "floor",
        "floor_stderr",
        "extra",
        "verdict",
        "margin",
        "replicates_to_decide",
    }
    for r in data["records"]:
        assert set(r) == keys
        assert set(r["metrics"]) == set(METRICS) == set(r["floor"]) == set(r["stderr"])
        assert set(r["p_value"]) == set(METRICS) - {"coupled"}
        assert r["nfe"] <= r["budget"] and r["replicates"] == 10 and r["samples"] == 100
        assert r["at_floor"] == (r["verdict"] == "at floor")
        if r["verdict"] == "differs":
            assert min(r["p_value"].values()) < 0.01 / 6
        assert set(r["margin"]) == set(r["p_value"])
    assert set(data["summary"]["gmm2d"]) == {"euler_maruyama", "ode_heun", "ddpm_ancestral"}
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 6 and float(rows[0]["sw1"]) > 0 and float(rows[0]["se_sw1"]) > 0
    png = (out / "error_vs_nfe.png").read_bytes()
    _check_error_plot_styles()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", png[16:24])
    assert 400 < w < 4000 and 300 < h < 4000
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_same_seed_same_metrics():
    kw = {"samples": 50, "seed": 3, "sde_reference": ("euler_maruyama", 200)}
    a = sd.compare(["gmm2d"], ["euler_maruyama", "pc"], [10], **kw)
    b = sd.compare(["gmm2d"], ["euler_maruyama", "pc"], [10], **kw)
    assert [repr(r.metrics) for r in a] == [repr(r.metrics) for r in b]  # NaN included
    assert math.isnan(a[1].metrics["coupled"]) and a[0].metrics["coupled"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--solvers", "nope"], "unknown solver 'nope'; known solvers:"),
        (["--solvers", "ddim:eta"], "solver option 'eta' in 'ddim:eta' is not key=value"),
        (["--solvers", "ddim:grid=spiral"], "grid='spiral' in 'ddim:grid=spiral'; known: uniform"),
        (["--solvers", "ddim:order=2"], "solver 'ddim:order=2':"),
        (["--target", "moon"], "unknown target 'moon'"),
        (["--nfe", "0"], "NFE budgets must be integers in [1, 1,000,000]"),
        (["--out", "/proc/forbidden"], "not a writable directory"),
        (["--model", "no_such_module_xyz:build"], "cannot import module"),
        (["--model", "tests/bad_model.py:build"], "must return a tensor of x's shape"),
    ],
)
def test_bad_input_one_line_error(args, message, capsys):
    assert main(["compare", *SMALL, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scoresde: error:") and message in err[0]


def test_user_model_against_reference_run(capsys):
    assert (
        main(
            [
                "compare",
                "--model",
                "examples/user_model.py:build",
                "--solvers",
                "ddpm_ancestral",
                "--nfe",
                "10",
                "--samples",
                "50",
                # short references: this checks the model path end to end, not convergence
                # (the default 1000-NFE ODE and 4000-step SDE references took 95 s here)
                "--reference",
                "ode_heun:100",
                "--sde-reference",
                "euler_maruyama:200",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "ddpm_ancestral" in out
    assert "reference: ode_heun at NFE 99; reverse SDE: euler_maruyama, 200 uniform steps" in out


def test_schedules_command(tmp_path, capsys):
    out = tmp_path / "s.png"
    assert main(["schedules", "--steps", "8", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cosine" in text and "t(SNR=1)" in text and out.read_bytes()[:4] == b"\x89PNG"
    # a directory that does not exist yet, with or without a trailing slash
    assert main(["schedules", "--steps", "8", "--out", str(tmp_path / "new" / "dir") + "/"]) == 0
    assert (tmp_path / "new" / "dir" / "schedules.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["schedules", "--steps", "8", "--out", str(tmp_path / "other")]) == 0
    assert (tmp_path / "other" / "schedules.png").is_file()
    assert main(["schedules", "--steps", "8", "--out", str(tmp_path / "a" / "b.png")]) == 0
    assert (tmp_path / "a" / "b.png").is_file()


def test_schedules_plot_shows_the_linear_curve_beside_the_ddpm_table():
    from scoresde.commands.schedule_report import STYLES, default_schedules

    names = list(default_schedules())
    linear, table = STYLES[names.index("linear")], STYLES[names.index("ddpm-linear-1000")]
    assert linear["lw"] > table["lw"] and "ls" in table  # wide solid under thin dashes


def test_metrics_known_values():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20000, 1, generator=gen, dtype=torch.float64)
    # W1 between N(0,1) and N(0.7,1) is the shift, 0.7, and equals a translated copy exactly
    assert metrics.sliced_wasserstein(x, x + 0.7, projections=8) == pytest.approx(0.7, rel=1e-9)
    y = torch.randn(20000, 1, generator=gen, dtype=torch.float64)
    assert metrics.sliced_wasserstein(x, y + 0.7) == pytest.approx(0.7, abs=0.03)
    assert metrics.sliced_wasserstein(x, y) < 0.03
    assert abs(metrics.mmd_rbf(x, y)) < 2e-3
    assert metrics.mmd_rbf(x, y + 2.0) > 0.2
    # unequal sample sizes: quantile formula
    assert metrics.sliced_wasserstein(x[:5000], y + 1.0) == pytest.approx(1.0, abs=0.05)


def test_solver_specs_options_grids_and_floor_summary(capsys):
    specs = ["dpm_solver++:order=3:grid=logsnr", "ddim:eta=1.0", "adaptive_sde"]
    records = sd.compare(["gmm2d"], specs, [10, 20], samples=100, seed=0,
                         sde_reference=("euler_maruyama", 400))  # fmt: skip
    by = {(r.solver, r.budget): r for r in records}
    dpm = by[(specs[0], 20)]
    assert dpm.time_grid == "logsnr" and dpm.config.startswith("dpm_solver++") and "3" in dpm.config
    assert by[(specs[1], 10)].time_grid == "uniform" and "eta=1" in by[(specs[1], 10)].config
    # the adaptive SDE solver runs its (rtol, atol) ladder, filed by its real NFE; its first
    # run (rtol 0.2, about 60 NFE) passes the largest budget, so the ladder ends there
    adaptive = [r for r in records if r.solver == "adaptive_sde"]
    assert len(adaptive) == 1 and f"rtol={SDE_TOLERANCES[0][0]}" in adaptive[0].config
    assert all(r.nfe > 20 and r.budget == r.nfe for r in adaptive)
    # coupled errors: against the ODE reference (dpm_solver++), the reverse-SDE reference
    # (ddim with eta = 1 is ancestral sampling), none for adaptive_sde (its own Brownian path)
    assert 0 < dpm.metrics["coupled"] < 0.1 and by[(specs[1], 10)].metrics["coupled"] > 0
    assert all(math.isnan(r.metrics["coupled"]) for r in adaptive)
    first = sd.evaluation.fewest_nfe_at_floor(records)
    for (_, solver), nfe in first.items():
        runs = sorted((r for r in records if r.solver == solver), key=lambda r: r.nfe)
        if nfe is None:
            assert not runs[-1].at_floor
        else:
            assert all(r.at_floor for r in runs if r.nfe >= nfe)
            before = [r for r in runs if r.nfe < nfe]
            assert not before or not before[-1].at_floor
    text = sd.evaluation.format_floor_summary(records)
    assert text.splitlines()[0].startswith("fewest NFE at the floor")
    lines = text.splitlines()
    assert [line.split()[0] for line in lines[3 : 3 + len(specs)]] == specs
    rest = lines[3 + len(specs) :]
    undetermined = {(r.target, r.solver) for r in records if r.verdict == "undetermined"}
    assert len(rest) == (1 + len(undetermined) if undetermined else 0)


def _check_error_plot_styles():
    """Every solver gets its own colour (the DPM-Solver variants were three alike greens) and
    the NFE axis reads plain budgets."""
    from matplotlib.colors import to_rgb

    from scoresde.evaluation import Record
    from scoresde.evaluation.plots import error_vs_nfe_figure, solver_styles

    solvers = ["ddim", "dpm_solver", "dpm_solver++", "dpm_solver_single", "sde_dpm_solver++"]
    colours = [to_rgb(s["color"]) for s in solver_styles(solvers).values()]
    gaps = [max(abs(a - b) for a, b in zip(c1, c2, strict=True))
            for i, c1 in enumerate(colours) for c2 in colours[i + 1:]]  # fmt: skip
    assert min(gaps) > 0.15, colours
    metrics = dict.fromkeys(("sw1", "coupled", "mmd"), 0.1)
    records = [
        Record(
            target="gmm2d",
            solver="ddim",
            config="",
            budget=b,
            nfe=b,
            steps=b,
            schedule="linear",
            time_grid="uniform",
            samples=10,
            replicates=2,
            seed=0,
            wall_s=0.0,
            metrics=metrics,
            stderr=metrics,
            p_value={},
            at_floor=False,
            floor=metrics,
            floor_stderr=metrics,
            extra={"exact_sampler": {}},
        )
        for b in (10, 20, 50)
    ]
    fig = error_vs_nfe_figure(records)
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["10", "20", "50"], ticks
    assert fig.axes[0].get_ylabel() == "sliced W1 to the target"


def test_every_cli_option_has_help_with_its_default(capsys):
    import re
    from importlib.metadata import version

    required = {"generate": {"--model", "--num", "--out"}}
    missing = []
    for command in ("compare", "generate", "likelihood", "schedules"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out.split("options:", 1)[1]
        # one entry per option: from its "  --name" line to the next one
        for entry in re.split(r"\n(?=  -)", text.strip("\n")):
            name = re.findall(r"--[a-z-]+", entry)[0]
            if name == "--help" or name in required.get(command, ()):
                continue
            if "default" not in " ".join(entry.split()[1:]):
                missing.append(f"{command} {name}")
    assert not missing, missing
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"scoresde {version('scoresde')}"
    assert sd.__version__ == version("scoresde")
