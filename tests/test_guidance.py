"""Conditioning, classifier-free guidance and x0 corrections against closed forms.

The analytic class-conditional target: class c has its own Gaussian mixture p(x | c) with
prior pi_c, so p(x) = sum_c pi_c p(x | c) is one mixture with every component; both scores are
exact at every t under the VP SDE (targets.GaussianMixture).
"""

import math

import pytest
import torch

import scoresde as sd
from scoresde.core.guidance import ClassifierFreeGuidance, guidance_interval
from scoresde.core.x0_correction import clip_x0, dynamic_threshold
from scoresde.evaluation.targets import GaussianMixture

SDE = sd.VPSDE()
PRIORS = [0.5, 0.3, 0.2]
CLASSES = [  # (weights, means, diagonal variances) per class, 2-D
    ([0.7, 0.3], [[-2.0, 0.0], [-1.0, 1.5]], [[0.2, 0.1], [0.05, 0.05]]),
    ([1.0], [[2.0, 0.5]], [[0.3, 0.2]]),
    ([0.5, 0.5], [[0.5, -2.0], [1.5, -1.0]], [[0.1, 0.1], [0.02, 0.3]]),
]
CONDITIONAL = [GaussianMixture(*c) for c in CLASSES]
MARGINAL = GaussianMixture(
    [p * w for p, (ws, _, _) in zip(PRIORS, CLASSES, strict=True) for w in ws],
    [m for _, ms, _ in CLASSES for m in ms],
    [v for _, _, vs in CLASSES for v in vs],
)
NULL = len(CLASSES)  # the "no class" label


class MixtureNet:
    """The exact network of the analytic target: eps of p_t(x | c), or of p_t(x) for NULL.
    Counts calls and records the batch sizes it was called with."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, x, t, class_labels):
        self.calls.append(x.shape[0])
        assert class_labels.shape == (x.shape[0],)
        out = torch.empty_like(x)
        for c, target in enumerate([*CONDITIONAL, MARGINAL]):
            rows = (class_labels == c).nonzero()[:, 0]
            if rows.numel():
                out[rows] = target.eps(x[rows], t[rows], SDE)
        return out


def _inputs(n=64):
    g = torch.Generator().manual_seed(3)
    x = 2 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64) * 0.98 + 0.01
    labels = torch.randint(0, len(CLASSES), (n,), generator=g)
    return x, t, labels


def _exact(x, t, labels, w):
    cond = torch.stack([CONDITIONAL[int(c)].score(x[i : i + 1], t[i : i + 1], SDE)[0]
                        for i, c in enumerate(labels)])  # fmt: skip
    return (1 - w) * MARGINAL.score(x, t, SDE) + w * cond


@pytest.mark.parametrize("w", [1.0, 0.0, 3.0, -0.5])
def test_guided_score_is_the_exact_combination(w):
    x, t, labels = _inputs()
    net = MixtureNet()
    guided = ClassifierFreeGuidance(sd.Score(net, SDE, "eps"), w, {"class_labels": NULL})
    got = guided.with_condition(class_labels=labels)(x, t)
    assert torch.allclose(got, _exact(x, t, labels, w), rtol=1e-9, atol=1e-9)
    assert net.calls == [2 * x.shape[0]]  # one batched call: [unconditional; conditional]


def test_guidance_schedule_over_t():
    x, t, labels = _inputs()
    schedule = guidance_interval(4.0, 0.2, 0.7)
    guided = ClassifierFreeGuidance(sd.Score(MixtureNet(), SDE, "eps"), schedule,
                                    {"class_labels": torch.tensor(NULL)})  # fmt: skip
    got = guided.with_condition(class_labels=labels)(x, t)
    w = torch.where((t >= 0.2) & (t <= 0.7), 4.0, 1.0)
    assert torch.allclose(got, _exact(x, t, labels, w[:, None]), rtol=1e-9, atol=1e-9)


def test_guided_sampling_uses_the_combined_score_on_every_path():
    """sample(condition=...) with the guided eps network (the eps fast path of DDIM and
    DPM-Solver++) equals sampling the exact combined score given as a plain function."""
    x, _, labels = _inputs(32)
    w = 2.5
    guided = ClassifierFreeGuidance(sd.Score(MixtureNet(), SDE, "eps"), w, {"class_labels": NULL})

    def exact(xx, tt):
        return _exact(xx, tt, labels, w)

    for solver in ("ddim", "dpm_solver++", "euler_maruyama"):
        kw = {
            "x_T": x,
            "solver": solver,
            "steps": 12,
            "generator": torch.Generator().manual_seed(0),
        }
        a = sd.sample(guided, SDE, condition={"class_labels": labels}, **kw).samples
        kw["generator"] = torch.Generator().manual_seed(0)
        b = sd.sample(exact, SDE, **kw).samples
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-8), solver


def _class_accuracy(x, labels):
    """Share of samples whose most likely class under p(x | c) is their label."""
    loglik = torch.stack([c.log_prob(x) for c in CONDITIONAL], dim=1)
    return float((loglik.argmax(1) == labels).double().mean())


def test_conditional_sampling_reaches_the_class():
    """Guidance scale 1 samples p(x | c): the share of samples classified as their label
    matches exact draws from p(x | c) (0.97: the classes overlap); scale 0 (unconditional)
    does not. n = 1500: the share's standard error is 0.0045, the tolerance 0.02 > 4 of them."""
    n = 1500
    labels = torch.arange(n) % len(CLASSES)
    g = torch.Generator().manual_seed(5)
    exact = torch.cat([CONDITIONAL[c].sample(n // 3, g, dtype=torch.float64) for c in range(3)])
    acc_exact = _class_accuracy(exact, torch.arange(3).repeat_interleave(n // 3))
    accs = []
    for w in (1.0, 0.0):
        guided = ClassifierFreeGuidance(
            sd.Score(MixtureNet(), SDE, "eps"), w, {"class_labels": NULL}
        )
        out = sd.sample(guided, SDE, (n, 2), solver="dpm_solver++", steps=30, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(1),
                        condition={"class_labels": labels}).samples  # fmt: skip
        accs.append(_class_accuracy(out, labels))
    assert accs[0] == pytest.approx(acc_exact, abs=0.02)
    assert accs[1] < 0.6


def test_condition_errors_name_the_argument():
    x, t, labels = _inputs(8)
    guided = ClassifierFreeGuidance(sd.Score(MixtureNet(), SDE, "eps"), 2.0, {"class_labels": NULL})
    with pytest.raises(ValueError, match="needs a condition"):
        guided(x, t)
    with pytest.raises(ValueError, match="uncondition has no entry for the condition 'y'"):
        guided.with_condition(y=labels)(x, t)
    with pytest.raises(ValueError, match=r"condition 'class_labels' has 3 rows.*8"):
        sd.sample(guided, SDE, x_T=x, steps=2, condition={"class_labels": labels[:3]})
    with pytest.raises(ValueError, match="scale must be a finite number"):
        ClassifierFreeGuidance(sd.Score(MixtureNet(), SDE, "eps"), math.nan, {"class_labels": 0})


@pytest.mark.parametrize("wrapped", [True, False])
def test_per_sample_conditions_follow_the_rows_of_adaptive_solvers(wrapped):
    """adaptive_sde evaluates only the rows that need it: their labels go with them, for a
    ``Score`` and for a plain function score(x, t, **condition) alike."""
    x, _, labels = _inputs(16)
    net = MixtureNet()  # asserts labels and x have the same rows on every call
    if wrapped:
        score = sd.Score(net, SDE, "eps")
    else:

        def score(xx, tt, class_labels):
            s = SDE.marginal(tt)[1][:, None]
            return -net(xx, tt, class_labels) / s

    sol = sd.sample(score, SDE, x_T=x, solver=sd.solvers.get("adaptive_sde", atol=1e-2),
                    generator=torch.Generator().manual_seed(0), steps=8,
                    condition={"class_labels": labels})  # fmt: skip
    assert torch.isfinite(sol.samples).all()
    assert min(net.calls) < x.shape[0]  # some calls were on part of the batch


def test_clip_and_dynamic_threshold_closed_forms():
    x0 = torch.tensor([[0.5, -3.0, 2.0, 0.1], [0.2, -0.4, 0.9, 0.3]])
    assert torch.equal(clip_x0()(x0), x0.clamp(-1, 1))
    # sample 0: the 0.75-quantile of |x0| = (0.5, 3, 2, 0.1) is 2.25 (linear interpolation)
    out = dynamic_threshold(0.75)(x0)
    s = 2.25
    assert torch.allclose(out[0], x0[0].clamp(-s, s) / s)
    assert torch.allclose(out[1], x0[1])  # quantile below 1: s = 1, nothing clipped
    assert torch.allclose(
        dynamic_threshold(0.75, max_value=1.5)(x0)[0], x0[0].clamp(-1.5, 1.5) / 1.5
    )


def test_x0_correction_reaches_score_eps_and_x0():
    x, t, labels = _inputs(16)
    base = sd.Score(MixtureNet(), SDE, "eps").with_condition(class_labels=labels)
    corr = base.with_x0_correction(clip_x0(-0.5, 0.5))
    x0 = corr.x0(x, t)
    assert torch.allclose(x0, base.x0(x, t).clamp(-0.5, 0.5))
    m, s = (v[:, None] for v in SDE.marginal(t))
    assert torch.allclose(corr(x, t), (m * x0 - x) / s**2)
    assert torch.allclose(corr.eps(x, t), (x - m * x0) / s)
