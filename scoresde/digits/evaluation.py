"""Data-side metrics of digit samples against the held-out test digits, and their floors.

Per replicate of n samples x (n, 1, 8, 8) in model space:

    fd         Fréchet distance between the Gaussian fits of the shipped classifier's 64
               features of the samples and of the 450 test digits (``metrics.frechet_distance``)
    label_dev  max over digits k of |share of samples classified k - 1/10|, in percentage
               points (the classifier's label histogram against uniform)
    unsure     share of samples whose largest class probability is <= 0.9
    nn_train   mean Euclidean distance from a sample to its nearest training image, the
               memorisation check: a model that copies its training set scores near 0

The data floor is what real held-out digits score, at the same n: ``fd`` of n training digits
against the test set (train against test), and ``label_dev``, ``unsure`` and ``nn_train`` of n
test digits. Digits enter as the model sees them, uniformly dequantised within their bins
(fixed seeds), so a perfect model of the training distribution reaches the floor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde.digits.classifier import DigitClassifier
from scoresde.digits.data import LEVELS, load_split
from scoresde.evaluation import metrics
from scoresde.likelihood import dequantize
from scoresde.models.evaluator import EvaluatorPresentation

CONFIDENT = 0.9
TEST_FEATURE_SEED = 1_001
FLOOR_SEED = 2_003


PRESENTATION = EvaluatorPresentation(
    formats={"fd": ".2f", "label_dev": ".2f", "unsure": ".3f", "nn_train": ".3f"},
    floor_label="held-out digits",
    footnote=(
        "data: real data scored like the samples at the same n (the data floor: fd of "
        "training digits against the test set; label_dev, unsure and nn_train of test "
        "digits). fd: Fréchet distance in the classifier's features to the test set; "
        "label_dev: largest |share of a class - 1/10| in percentage points; unsure: share "
        "with class probability <= 0.9; nn_train: mean distance to the nearest training "
        "image (tested two-sided: lower than held-out data is memorisation)."
    ),
    panels={"fd": "Fréchet distance to test digits"},
)


class DigitsEvaluator:
    """Scores digit samples with ``classifier`` (``scoresde.models.evaluator.Evaluator``);
    ``metrics`` names what ``__call__`` returns."""

    metrics = ("fd", "label_dev", "unsure", "nn_train")
    two_sided = ("nn_train",)  # closer than held-out digits is memorisation, farther is worse
    presentation = PRESENTATION

    def __init__(self, classifier: DigitClassifier) -> None:
        self.classifier = classifier.eval()
        self.device = next(classifier.parameters()).device
        test = load_split("test").levels
        gen = torch.Generator().manual_seed(TEST_FEATURE_SEED)
        test_x = dequantize(test, levels=LEVELS, generator=gen)
        self.test_fit = metrics.gaussian_fit(self._classify(test_x)[0])
        self.train_images = load_split("train").images(torch.float64).flatten(1)

    @torch.no_grad()
    def _classify(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(features (n, 64) float64, class probabilities (n, 10) float64)."""
        x = x.to(device=self.device, dtype=torch.float32)
        feats = self.classifier.features(x)
        probs = torch.softmax(self.classifier.head(feats), dim=1)
        return feats.double().cpu(), probs.double().cpu()

    def labels(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(predicted digit (n,), its probability (n,)) of images x (n, 1, 8, 8)."""
        probs = self._classify(x)[1]
        conf, label = probs.max(dim=1)
        return label, conf

    def score(self, x: Tensor) -> dict[str, float]:
        """The four metrics of one set of images x (n, 1, 8, 8)."""
        feats, probs = self._classify(x)
        conf, label = probs.max(dim=1)
        share = torch.bincount(label, minlength=10).double() / label.numel()
        nearest = torch.cdist(x.detach().cpu().double().flatten(1), self.train_images).amin(1)
        return {
            "fd": metrics.frechet_distance(*metrics.gaussian_fit(feats), *self.test_fit),
            "label_dev": float((share - 0.1).abs().max()) * 100,
            "unsure": float((conf <= CONFIDENT).double().mean()),
            "nn_train": float(nearest.mean()),
        }

    def __call__(self, xs: Tensor) -> dict[str, list[float]]:
        """Per-replicate metrics of xs (R, n, 1, 8, 8)."""
        rows = [self.score(x) for x in xs]
        return {k: [row[k] for row in rows] for k in self.metrics}

    def likelihood_report(self, spec, **options) -> str:
        """``scoresde likelihood --model digits``: test-set bits/dim of ``spec`` (the digits
        model this evaluator belongs to) by the probability-flow ODE and by the DDPM bound
        (``scoresde.digits.likelihood``)."""
        from scoresde.digits.likelihood import digits_likelihood, format_digits_likelihood

        return format_digits_likelihood(digits_likelihood(spec, **options))

    def floor(self, n: int, replicates: int, seed: int = FLOOR_SEED) -> dict[str, list[float]]:
        """The metrics of real digits, per replicate at sample size n: ``fd`` from n training
        digits, the others from n test digits (each replicate an independent draw without
        replacement; n is capped at the split's size)."""
        train, test = load_split("train").levels, load_split("test").levels
        gen = torch.Generator().manual_seed(seed)
        rows = []
        for _ in range(replicates):
            tr = train[torch.randperm(len(train), generator=gen)[: min(n, len(train))]]
            te = test[torch.randperm(len(test), generator=gen)[: min(n, len(test))]]
            fd = self.score(dequantize(tr, levels=LEVELS, generator=gen))["fd"]
            rows.append(dict(self.score(dequantize(te, levels=LEVELS, generator=gen)), fd=fd))
        return {k: [row[k] for row in rows] for k in self.metrics}
