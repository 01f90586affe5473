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

"No significant difference" is not "equal": with few replicates a poor solver passes every
test. ``floor_verdict`` therefore claims "at the floor" only by an equivalence test. Each
metric's margin is the spread of that metric between two independent exact sample sets of the
same size,

    delta = z_0.975 sqrt(2) sd,   sd = the exact-sampling replicate sd = se sqrt(R),

the half-width of the central 95 % range of m_a - m_b for two exact replicates, so that "at the
floor" reads "no further from exact sampling than exact sampling is from itself". A metric is
within its margin when the one-sided 1 - EQUIVALENCE_LEVEL confidence bound of the difference d
(Welch's t, or Student's against a known expectation) lies inside it: d + t se_d < delta for
a distance, |d| + t se_d < delta for a two-sided metric (two one-sided tests, TOST). The run is
"at the floor" when every metric is (an intersection-union test: its chance of a false claim
is at most EQUIVALENCE_LEVEL with no multiplicity correction), "differs" when the significance
test ``floor_test`` rejects, and "undetermined" otherwise, with the replicates that would
decide if the estimates stayed as they are (``replicates_to_decide``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from scipy import stats

EQUIVALENCE_LEVEL = 0.05  # the chance of a false "at the floor"
MARGIN_QUANTILE = 0.975  # delta covers the central 95 % of exact-vs-exact differences


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


@dataclass(frozen=True)
class Difference:
    """d = a metric's mean minus its exact-sampling value, with the standard error of d and its
    degrees of freedom at R replicates; ``sd`` = se_d sqrt(R) and ``df_per`` = df / (R - 1)
    scale both to another number of replicates (``at``)."""

    d: float
    se: float
    df: float
    sd: float
    df_per: float

    @classmethod
    def between(cls, run: Estimate, floor: Estimate, expected: float | None) -> Difference:
        """Against ``expected`` (known exactly): Student's, se_d = se; else Welch's,
        se_d^2 = se^2 + se_floor^2 with the Welch-Satterthwaite df."""
        r = run.replicates
        if expected is not None:
            return cls(run.mean - expected, run.se, r - 1, run.se * math.sqrt(r), 1.0)
        va, vb = run.se**2, floor.se**2
        se = math.sqrt(va + vb)
        denom = va**2 / (r - 1) + vb**2 / (floor.replicates - 1)
        df = (va + vb) ** 2 / denom if denom > 0 else math.inf
        return cls(run.mean - floor.mean, se, df, se * math.sqrt(r), df / (r - 1))

    def at(self, replicates: int) -> Difference:
        """The same d and per-replicate spread, measured on ``replicates`` replicates."""
        df = self.df_per * (replicates - 1)
        return replace(self, se=self.sd / math.sqrt(replicates), df=df)

    def within(self, margin: float, two_sided: bool, level: float = EQUIVALENCE_LEVEL) -> bool:
        """The 1 - level confidence bound(s) of d inside the margin: d + t se < delta
        (a distance), or |d| + t se < delta (two-sided: both one-sided tests at ``level``)."""
        if not all(math.isfinite(v) for v in (self.d, self.se, margin)):
            return False
        t = float(stats.t.ppf(1 - level, self.df)) if self.se > 0 else 0.0
        return (abs(self.d) if two_sided else self.d) + t * self.se < margin


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
    diff = Difference.between(ea, eb, None)
    return _t_p_value(diff.d / diff.se, diff.df, alternative)


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
    diff = Difference.between(e, e, expected)
    return _t_p_value(diff.d / diff.se, diff.df, alternative)


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


def equivalence_margin(floor: Estimate) -> float:
    """delta = z_0.975 sqrt(2) sd with sd = se sqrt(R): the spread of a metric between two
    independent exact sample sets of the same size (module doc); NaN without two replicates."""
    sd = floor.se * math.sqrt(floor.replicates)
    return float(stats.norm.ppf(MARGIN_QUANTILE)) * math.sqrt(2) * sd


@dataclass(frozen=True)
class Verdict:
    """A run against exact sampling: ``label`` is "at floor", "differs" or "undetermined";
    ``p_value`` the significance tests (``floor_test``), ``margin`` delta per metric, and
    ``replicates_to_decide`` (undetermined runs only) the replicates of the same n that would
    decide one way if the estimates stayed as they are (normal approximation)."""

    label: str
    p_value: dict[str, float]
    margin: dict[str, float]
    replicates_to_decide: int | None = None


def floor_verdict(
    values: dict[str, Sequence[float]],
    baseline: dict[str, Sequence[float]],
    alpha: float,
    two_sided: Sequence[str] = (),
    expected: dict[str, float] | None = None,
    level: float = EQUIVALENCE_LEVEL,
) -> Verdict:
    """The verdict on one run (module doc): "at floor" when every metric in ``baseline`` is
    within its margin at ``level``, else "differs" when ``floor_test`` rejects at family-wise
    ``alpha``, else "undetermined". ``baseline`` holds exact sampling's replicate values (the
    margins come from their spread); ``expected`` the metrics whose exact-sampling mean is
    known exactly."""
    expected = expected or {}
    p, no_difference = floor_test(values, baseline, alpha, two_sided, expected)
    floors = {k: estimate(v) for k, v in baseline.items()}
    margin = {k: equivalence_margin(e) for k, e in floors.items()}
    diffs = {
        k: Difference.between(estimate(values[k]), floors[k], expected.get(k)) for k in baseline
    }
    if all(diffs[k].within(margin[k], k in two_sided, level) for k in baseline):
        return Verdict("at floor", p, margin)
    if not no_difference:
        return Verdict("differs", p, margin)
    need = _replicates_to_decide(diffs, margin, two_sided, alpha / len(p), level)
    return Verdict("undetermined", p, margin, need)


def _replicates_to_decide(
    diffs: dict[str, Difference],
    margin: dict[str, float],
    two_sided: Sequence[str],
    alpha: float,
    level: float,
    most: int = 10**6,
) -> int | None:
    """The fewest replicates R' at which, with every d and per-replicate sd unchanged, either
    every metric is within its margin or one differs at level ``alpha`` (t quantiles at the
    df of R' replicates); None if neither happens by ``most``. Both criteria only get easier
    as R' grows, so a bisection finds R'."""

    def decides(r: int) -> bool:
        at = {k: diff.at(r) for k, diff in diffs.items()}
        if all(at[k].within(margin[k], k in two_sided, level) for k in at):
            return True
        for k, diff in at.items():  # the significance test of floor_test, on R' replicates
            alternative = "two-sided" if k in two_sided else "greater"
            if diff.se > 0 and _t_p_value(diff.d / diff.se, diff.df, alternative) < alpha:
                return True
        return False

    lo, hi = 2, most
    if not decides(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if decides(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo
