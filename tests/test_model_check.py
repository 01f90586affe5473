"""``check_model`` flags wrong adapters and passes every correctly adapted model we have."""

import sys
import warnings
from pathlib import Path

import pytest
import torch

import scoresde as sd
from scoresde.commands.cli import main
from scoresde.models import ModelSpec, load_model

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "examples"))


@pytest.fixture(scope="module")
def digits():
    return load_model("digits")


def _wrong_adapters(digits):
    net, label = digits.score.net, digits.score.time_label
    return {
        # the network needs time_label=scaled_time(1000); left out, it sees t in [0, 1]
        "no time label": ModelSpec(sd.score_from_eps(net, digits.sde), digits.sde, digits.shape),
        # the eps-network passed as the score itself
        "eps as score": ModelSpec(lambda x, t: net(x, label(t)), digits.sde, digits.shape),
    }


def test_flags_both_wrong_adapters_of_the_digits_network(digits):
    wrong = _wrong_adapters(digits)
    no_label = sd.check_model(wrong["no time label"], warn=False)
    assert not no_label.ok
    assert [p.name for p in no_label.failures] == ["size at t = T: eps_hat ~ x / s(T)"]
    assert "implied x0 prediction has rms 1" in no_label.failures[0].detail  # 133: not data
    as_score = sd.check_model(wrong["eps as score"], warn=False)
    assert [p.passed for p in as_score.probes] == [False, None]
    assert "points against the noise" in as_score.failures[0].detail
    with pytest.warns(sd.ModelCheckWarning, match="time label"):
        sd.check_model(wrong["no time label"])


def test_a_score_network_passed_as_eps_is_flagged(digits):
    # score = -eps / s: at t = T (s ~ 1) the declared "eps" is -eps, pointing against x
    net, label = digits.score.net, digits.score.time_label
    sde = digits.sde

    def score_net(x, t):  # the exact score of the same model, wrongly declared as eps
        return -net(x, label(t)) / sde.marginal(t)[1].view(-1, 1, 1, 1)

    spec = ModelSpec(sd.score_from_eps(score_net, sde), sde, digits.shape)
    report = sd.check_model(spec, warn=False)
    assert [p.passed for p in report.probes] == [False, None]


def _correct_models():
    from diffusers import DDPMScheduler
    from diffusers_model import tiny, tiny_guided
    from reference_samplers import tiny_unet

    yield "digits", load_model("digits")
    yield "toy", load_model(f"{HERE / 'toy_model.py'}:build")
    yield "trainable", load_model(f"{HERE / 'toy_model.py'}:build_trainable")
    yield "user_model", load_model(f"{HERE.parent / 'examples' / 'user_model.py'}:build")
    yield "tiny", tiny()
    yield "tiny_guided", tiny_guided()
    for prediction in ("epsilon", "sample", "v_prediction"):
        sched = DDPMScheduler(prediction_type=prediction)
        yield prediction, sd.from_diffusers(tiny_unet(dtype=torch.float32), sched, shape=(2, 8, 8))
    yield (
        "k-diffusion",
        sd.from_k_diffusion(
            lambda x, sigma: x / (1 + sigma.view(-1, 1, 1, 1) ** 2), 0.002, 80.0, (2, 8, 8)
        ),
    )


def test_passes_every_correct_model_in_the_repository():
    pytest.importorskip("diffusers")
    for name, spec in _correct_models():
        report = sd.check_model(spec, warn=False)
        assert report.ok, f"{name}:\n{report}"


def test_check_leaves_the_global_random_state_alone(digits):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    sd.check_model(digits, warn=False)
    assert torch.equal(torch.rand(3), expected)


def test_compare_and_generate_warn_once_and_can_be_silenced(tmp_path, capsys, monkeypatch):
    model = tmp_path / "wrong.py"
    model.write_text(
        "import scoresde as sd\n"
        "from scoresde.models import load_model\n"
        "def build():\n"
        "    d = load_model('digits')\n"
        "    return {'net': d.score.net, 'shape': d.shape}  # time label left out\n"
    )
    ref = f"{model}:build"
    args = ["--nfe", "4", "--solvers", "ddim", "--samples", "4", "--replicates", "2"]
    args += ["--reference", "ddim:4", "--sde-reference", "euler_maruyama:4", "--no-progress"]
    assert main(["compare", "--model", ref, *args]) == 0
    err = capsys.readouterr().err
    assert err.count("scoresde: warning: the model fails a sanity check") == 1
    assert main(["compare", "--model", ref, *args, "--no-model-check"]) == 0
    assert "sanity check" not in capsys.readouterr().err
    gen = ["generate", "--model", ref, "--num", "2", "--steps", "2", "--no-progress"]
    assert main([*gen, "--out", str(tmp_path / "g")]) == 0
    assert "sanity check" in capsys.readouterr().err
    assert main([*gen, "--out", str(tmp_path / "h"), "--no-model-check"]) == 0
    assert "sanity check" not in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("error", sd.ModelCheckWarning)
        sd.compare(model="digits", nfe=[4], solvers=["ddim"], samples=4, replicates=2,
                   reference=("ddim", 4), sde_reference=("euler_maruyama", 4))  # fmt: skip
