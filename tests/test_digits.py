"""The built-in digits model: shipped weights, split, sample quality, and the main commands."""

import json

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde import digits
from scoresde.commands.cli import main
from scoresde.commands.generate import read_samples
from scoresde.digits.evaluation import DigitsEvaluator
from scoresde.digits.train import SHIPPED_SETTINGS, train_classifier, train_unet
from scoresde.models import load_model
from scoresde.models.directory import sha256_of


def test_split_is_fixed_stratified_and_recorded():
    train, test = digits.load_split("train"), digits.load_split("test")
    assert (len(train), len(test)) == (1347, 450)
    assert not set(train.indices.tolist()) & set(test.indices.tolist())
    assert test.indices.tolist() == digits.metadata()["data"]["test_indices"]
    # stratified: every digit holds 24-26 % of its images in the test split
    share = np.bincount(test.labels, minlength=10) / (
        np.bincount(test.labels, minlength=10) + np.bincount(train.labels, minlength=10)
    )
    assert share.min() > 0.24 and share.max() < 0.26
    assert int(train.levels.min()) == 0 and int(train.levels.max()) == 16


def test_shipped_weights_match_their_checksums_and_settings():
    """The U-Net is a model directory of one trainer call with the shipped settings; the
    classifier's bytes match its record."""
    meta = digits.metadata()
    assert meta["sha256"]["model.safetensors"] == sha256_of(digits.MODEL_DIR / "model.safetensors")
    record = digits.classifier_metadata()
    assert record["sha256"] == sha256_of(digits.WEIGHTS_DIR / digits.CLASSIFIER_FILE)
    assert sum(f.stat().st_size for f in digits.MODEL_DIR.iterdir()) < 2**20
    training = meta["training"]
    for key, value in SHIPPED_SETTINGS.items():
        assert training[key] == value, key
    assert (meta["path"], meta["prediction"], training["seed"]) == ("ddpm-linear", "eps", 0)
    assert meta["loss_curve"][-1]["loss"] < 0.1 and meta["test_loss"]["mean"] < 0.1


def test_shipped_classifier_reaches_97_percent_on_the_test_split():
    test = digits.load_split("test")
    with torch.no_grad():
        pred = digits.load_classifier()(test.images()).argmax(1)
    assert float((pred == test.labels).float().mean()) >= 0.97


def test_training_is_reproducible_from_the_seed():
    """A few steps of the shipped U-Net's trainer call and of the classifier's, twice: the
    same seed gives the same bytes, another seed other weights (the full runs are the same
    code for 30000 and 3000 steps)."""
    a, b, c = (train_unet(None, seed=s, steps=5, progress=False).network for s in (3, 3, 4))
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert any(
        not torch.equal(va, vc)
        for va, vc in zip(a.state_dict().values(), c.state_dict().values(), strict=True)
    )
    ca, _ = train_classifier(seed=3, steps=5)
    cb, _ = train_classifier(seed=3, steps=5)
    assert all(
        torch.equal(x, y)
        for x, y in zip(ca.state_dict().values(), cb.state_dict().values(), strict=True)
    )


def test_global_rng_is_untouched_by_loading_and_training():
    state = torch.random.get_rng_state()
    load_model("digits")
    train_unet(None, seed=0, steps=1, progress=False)
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.slow
def test_ddpm_samples_are_good_digits():
    """Issue #16's acceptance, 1000-step DDPM ancestral sampling of 1000 digits, seed 0:
    >= 90 % classified with probability > 0.9, every digit's share within 3 points of 10 %,
    and the Fréchet distance within 3x the floor of 1000 training digits against the test
    set."""
    spec = load_model("digits")
    gen = torch.Generator().manual_seed(0)
    sol = sd.sample(
        spec.score, spec.sde, (1000, *spec.shape), solver="ddpm_ancestral", steps=1000,
        generator=gen,
    )  # fmt: skip
    ev: DigitsEvaluator = spec.evaluator
    got = ev.score(sol.samples)
    floor = ev.floor(1000, 1)
    assert got["unsure"] <= 0.10, got
    assert got["label_dev"] <= 3.0, got
    assert got["fd"] <= 3 * floor["fd"][0], (got, floor)


def test_compare_on_digits_adds_data_metrics_and_floors():
    seen = []
    records = sd.compare(
        solvers=["ode_heun", "ddpm_ancestral"], nfe=[10], samples=12, replicates=2,
        model="digits", reference=("ode_heun", 20), sde_reference=("euler_maruyama", 20),
        on_samples=lambda label, nfe, x: seen.append((label, nfe, tuple(x.shape))),
    )  # fmt: skip
    assert [r.solver for r in records] == ["ode_heun", "ddpm_ancestral"]
    for r in records:
        assert {"fd", "label_dev", "unsure", "nn_train", "coupled"} <= set(r.metrics)
        assert set(r.extra["data_floor"]) == {"fd", "label_dev", "unsure", "nn_train"}
        assert r.samples == 12 and r.replicates == 2
        assert np.isfinite(r.metrics["coupled"])
    assert seen[0][0] == "reference" and all(s[2] == (24, 1, 8, 8) for s in seen)

    # the error plot of a model run: SW1 is to the reference, the data floor is in the legend
    from scoresde.evaluation.plots import error_vs_nfe_figure

    fig = error_vs_nfe_figure(records)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "held-out data" in labels and "reference ± 2 s.e." in labels
    assert fig.axes[0].get_ylabel() == "sliced W1 to the ODE reference"


def test_compare_defaults_come_from_the_model():
    with pytest.raises(ValueError, match="budgets"):
        sd.compare(model="digits", nfe=[0])
    spec = load_model("digits")
    assert spec.compare_defaults["samples"] * spec.compare_defaults["replicates"] == 640


def test_cli_compare_digits_writes_results_and_grids(tmp_path, capsys):
    out = tmp_path / "res"
    rc = main([
        "compare", "--model", "digits", "--solvers", "ddpm_ancestral,ode_heun", "--nfe", "10,20",
        "--samples", "8", "--replicates", "2", "--reference", "ode_heun:20",
        "--sde-reference", "euler_maruyama:20", "--out", str(out), "--no-progress",
    ])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "held-out digits" in text and "fd" in text
    names = sorted(p.name for p in (out / "grids").iterdir())
    assert names == ["ddpm_ancestral.png", "nfe_0010.png", "nfe_0020.png", "ode_heun.png"]
    settings = json.loads((out / "results.json").read_text())["settings"]
    assert settings["nfe"] == [10, 20] and settings["samples"] == 8


def test_cli_generate_digits(tmp_path):
    out = tmp_path / "gen"
    rc = main([
        "generate", "--model", "digits", "--solver", "ddim", "--steps", "5", "--num", "6",
        "--batch-size", "4", "--out", str(out), "--no-progress",
    ])  # fmt: skip
    assert rc == 0
    x = read_samples(out)
    assert x.shape == (6, 1, 8, 8) and np.isfinite(x).all()


def test_cli_likelihood_digits_prints_both_bounds(capsys):
    rc = main(["likelihood", "--model", "digits", "--samples", "6", "--rtol", "1e-3",
               "--atol", "1e-3"])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    rows = {line.split("  ")[0]: line for line in text.splitlines()}
    ode = next(v for k, v in rows.items() if k.startswith("probability-flow ODE"))
    vlb = next(v for k, v in rows.items() if k.startswith("DDPM variational bound"))
    for line in (ode, vlb):
        bpd = float(line.split()[-5])
        assert 0 < bpd < np.log2(17)  # better than a uniform guess over the 17 levels
