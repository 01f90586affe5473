"""Replicate statistics: a metric's mean with its standard error, and the test that decides
whether a solver differs from exact sampling.

Every metric in ``compare`` is measured on R independent replicates (R disjoint sets of
samples, each from its own x_T and noise). Its estimate is the replicate mean, and its
standard error is the replicate standard deviation over sqrt(R):

    mean = (1/R) sum_r m_r,   se = sqrt( sum_r (m_r - mean)^2 / (R - 1) / R )

A metric whose expectation under exact sampling is known exactly (unbiased MMD^2 to the
target: 0; cross-entropy: the target's entropy) is tested against that value with Student's
one-sample t-test. Any other metric is compared with exact sampling by Welch's two-sample
t-test on the two sets of replicate values, t = (mean_a - mean_b) / sqrt(se_a^2 + se_b^2). In
``compare`` the exact sample is the converged flow of the same x_T (common random numbers),
so the two sets are
positively correlated and the true variance of the difference is smaller than Welch assumes:
the test is conservative (it calls a difference significant less often than its level says),
and a converged solver, equal to the reference up to round-off, is never flagged. Where
several metrics are tested at once, ``floor_test`` applies Bonferroni's correction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """A replicate mean with its standard error (``se`` is NaN for one replicate)."""

    mean: float
    se: float
    replicates: int

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.se:.2g}"


def estimate(values: Sequence[float]) -> Estimate:
    """Mean and standard error of replicate values; non-finite values make the mean inf/NaN."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("no replicate values")
    r = len(vals)
    mean = sum(vals) / r
    if r < 2 or not all(math.isfinite(v) for v in vals):
        return Estimate(mean, math.nan, r)
    var = sum((v - mean) ** 2 for v in vals) / (r - 1)
    return Estimate(mean, math.sqrt(var / r), r)


def welch_p_value(
    values: Sequence[float], baseline: Sequence[float], alternative: str = "greater"
) -> float:
    """p-value of Welch's t-test of mean(values) = mean(baseline) against ``alternative``
    ("greater": values are larger; "two-sided"). 1.0 when both sets are identical (nothing to
    detect); 0.0 when a value is non-finite and the baseline is not (a diverged run is never
    at the floor)."""
    if len(values) < 2 or len(baseline) < 2:
        raise ValueError("give at least two replicate values on each side")
    if alternative not in ("greater", "two-sided"):
        raise ValueError(f"alternative must be 'greater' or 'two-sided', got {alternative!r}")
    a, b = [float(v) for v in values], [float(v) for v in baseline]
    if not all(math.isfinite(v) for v in a):
        return 0.0
    if a == b:
        return 1.0
    ea, eb = estimate(a), estimate(b)
    if ea.se == 0 and eb.se == 0:  # two constant sets: a difference without noise
        greater = ea.mean > eb.mean
        return 0.0 if greater or alternative == "two-sided" else 1.0
    va, vb = ea.se**2, eb.se**2
    df = (va + vb) ** 2 / (va**2 / (ea.replicates - 1) + vb**2 / (eb.replicates - 1))
    return _t_p_value((ea.mean - eb.mean) / math.sqrt(va + vb), df, alternative)


def _t_p_value(t: float, df: float, alternative: str) -> float:
    """P(T >= t) ("greater") or P(|T| >= |t|) ("two-sided") for Student's t with df degrees.

    Written out rather than through ``scipy.stats.ttest_*``, whose variance of nearly equal
    replicate values warns of precision loss on every compare run; the two-pass variance of
    ``estimate`` is exact enough there."""
    if alternative == "greater":
        return float(stats.t.sf(t, df))
    return float(min(1.0, 2 * stats.t.sf(abs(t), df)))


def one_sample_p_value(
    values: Sequence[float], expected: float, alternative: str = "greater"
) -> float:
    """p-value of Student's one-sample t-test of mean(values) = ``expected`` (a value known
    exactly, such as the target's entropy) against ``alternative``; 0.0 for non-finite values."""
    if len(values) < 2:
        raise ValueError("give at least two replicate values")
    a = [float(v) for v in values]
    if not all(math.isfinite(v) for v in a):
        return 0.0
    e = estimate(a)
    if e.se == 0:
        diff = a[0] - expected
        return 1.0 if diff == 0 or (diff < 0 and alternative == "greater") else 0.0
    return _t_p_value((e.mean - expected) / e.se, e.replicates - 1, alternative)


def floor_test(
    values: dict[str, Sequence[float]],
    baseline: dict[str, Sequence[float]],
    alpha: float,
    two_sided: Sequence[str] = (),
    expected: dict[str, float] | None = None,
) -> tuple[dict[str, float], bool]:
    """p-values per metric in ``baseline`` and the verdict "at the floor": no metric differs at
    level alpha / (number of metrics) (Bonferroni, so the chance of a false "not at the floor"
    is at most alpha). A metric whose value under exact sampling is known exactly
    (``expected``: MMD^2's is 0, the cross-entropy's is the target's entropy) is tested against
    that value (one-sample t-test); the others against the baseline's replicates (Welch).
    One-sided ("greater") unless named in ``two_sided``."""
    expected = expected or {}
    p = {}
    for k in baseline:
        alt = "two-sided" if k in two_sided else "greater"
        if k in expected:
            p[k] = one_sample_p_value(values[k], expected[k], alt)
        else:
            p[k] = welch_p_value(values[k], baseline[k], alt)
    return p, all(v >= alpha / len(p) for v in p.values())
