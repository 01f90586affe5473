"""compare on several Gaussian paths: the path specs, the refusals, and records kept apart."""

import pytest
import torch

import scoresde as sd
from scoresde.commands.cli import main
from scoresde.evaluation import path_from_spec


def test_path_specs_build_the_paths():
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    assert path_from_spec("rectified-flow").marginal(t)[1].equal(t)
    shifted = path_from_spec("rectified-flow:shift=3").marginal(t)[1]
    torch.testing.assert_close(shifted, 3 * t / (1 + 2 * t))
    edm = path_from_spec("edm")
    assert (edm.sigma_min, edm.sigma_max) == (0.002, 80.0)
    assert isinstance(path_from_spec("vp-cosine").schedule, sd.CosineSchedule)


@pytest.mark.parametrize(
    ("spec", "naming"),
    [
        ("foo", "unknown path 'foo'"),
        ("edm:shift=2", "shift applies to rectified-flow and cosine only"),
        ("rectified-flow:shift=x", "shift must be a number"),
        ("rectified-flow:scale=2", "the only option is shift=a"),
        ("rectified-flow:shift=0", "shift must be a finite number > 0"),
    ],
)
def test_bad_path_specs_name_the_path(spec, naming):
    with pytest.raises(ValueError, match=naming):
        path_from_spec(spec)


def test_path_with_a_model_or_a_schedule_is_refused():
    with pytest.raises(ValueError, match="a model has its own path"):
        sd.compare(path="rectified-flow", model="digits", nfe=10, check_model=False)
    with pytest.raises(ValueError, match="give schedule or path, not both"):
        sd.compare(path="rectified-flow", schedule="cosine", nfe=10)


def test_every_solver_runs_on_each_path_from_the_same_data(capsys):
    records = sd.compare(
        targets="gmm2d",
        solvers="ode_heun,dpm_solver++:order=2:grid=logsnr,euler_maruyama",
        nfe=10,
        path="rectified-flow,vp-linear,rectified-flow:shift=3",
        samples=100,
        replicates=2,
        seed=3,
    )
    by_target = {}
    for r in records:
        by_target.setdefault(r.target, []).append(r)
        assert torch.isfinite(torch.tensor(r.metrics["sw1"])), r
    assert sorted(by_target) == [
        "gmm2d/rectified-flow",
        "gmm2d/rectified-flow:shift=3",
        "gmm2d/vp-linear",
    ]
    for target, rows in by_target.items():
        assert {r.schedule for r in rows} == {target.split("/")[1]}
        assert len(rows) == 3


def test_cli_path_runs_on_the_rectified_flow(capsys):
    code = main(
        ["compare", "--path", "rectified-flow", "--target", "gmm2d", "--nfe", "10,20",
         "--solvers", "ode_euler,unipc", "--samples", "100", "--replicates", "2"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "gmm2d/rectified-flow" in out and "schedule rectified-flow" in out


def test_budgets_count_the_limit_step_on_zero_snr_paths():
    # dpm_solver++(3) on rectified flow: limit step + its correction + one per step after
    records = sd.compare(targets="gmm2d", solvers="dpm_solver++:order=3,ode_heun,unipc",
                         nfe="5,10", path="rectified-flow", samples=50, replicates=2)  # fmt: skip
    for r in records:
        assert r.nfe <= r.budget, (r.solver, r.nfe, r.budget)
    assert {r.nfe for r in records if r.solver == "dpm_solver++:order=3"} == {5, 10}
