"""Verdicts that claim "at the floor" only by an equivalence test (scoresde.evaluation.estimates)
and the pathwise column that ranks discretisation error without sampling noise."""

import math
import statistics

import pytest
from scipy import stats

import scoresde as sd
from scoresde.evaluation import (
    Record,
    equivalence_margin,
    estimate,
    fewest_nfe_pathwise,
    floor_verdict,
    inversions,
)
from scoresde.evaluation.estimates import Difference

A = [0.31, 0.35, 0.29, 0.40, 0.33, 0.36]
B = [0.30, 0.28, 0.33, 0.31, 0.27, 0.32]


def test_margin_is_the_spread_between_two_exact_sample_sets():
    spread = stats.norm.ppf(0.975) * math.sqrt(2) * statistics.stdev(B)
    assert equivalence_margin(estimate(B)) == pytest.approx(spread, rel=1e-12)


@pytest.mark.parametrize("margin", [0.01, 0.03, 0.05, 0.08])
def test_within_margin_is_scipys_shifted_one_sided_t_tests(margin):
    """Independent truth: d + t se < delta is the Welch test of mean(a) - delta < mean(b)
    rejecting at 0.05 (scipy on the shifted values); two-sided adds the mirror test (TOST)."""
    diff = Difference.between(estimate(A), estimate(B), None)
    upper = stats.ttest_ind([a - margin for a in A], B, equal_var=False, alternative="less")
    lower = stats.ttest_ind([a + margin for a in A], B, equal_var=False, alternative="greater")
    assert diff.within(margin, two_sided=False) == (upper.pvalue < 0.05)
    assert diff.within(margin, two_sided=True) == (max(upper.pvalue, lower.pvalue) < 0.05)
    # against a known expectation: Student's one-sample tests
    one = Difference.between(estimate(A), estimate(B), expected=0.30)
    up1 = stats.ttest_1samp([a - margin for a in A], 0.30, alternative="less")
    lo1 = stats.ttest_1samp([a + margin for a in A], 0.30, alternative="greater")
    assert one.within(margin, two_sided=True) == (max(up1.pvalue, lo1.pvalue) < 0.05)


def test_the_three_verdicts():
    base = {"sw1": B}
    same = floor_verdict({"sw1": B}, base, alpha=0.01)
    assert same.label == "at floor" and same.replicates_to_decide is None
    far = floor_verdict({"sw1": [b + 1.0 for b in B]}, base, alpha=0.01)
    assert far.label == "differs"
    # on 3 replicates, d = 0.7 delta (about 2 sd) is neither within the margin (that needs
    # d < 1.0 sd there) nor significant (d > 3.1 sd); on 6 replicates the two thresholds meet
    few = {"sw1": B[:3]}
    shift = 0.7 * equivalence_margin(estimate(B[:3]))
    mid = floor_verdict({"sw1": [b + shift for b in B[2::-1]]}, few, alpha=0.01)
    assert mid.label == "undetermined" and mid.replicates_to_decide > 3
    # a diverged run differs; it is never undetermined
    assert floor_verdict({"sw1": [math.nan] * 6}, base, alpha=0.01).label == "differs"


def test_replicates_to_decide_do_decide():
    """Replicates drawn from the same per-replicate law at the suggested R decide the run (the
    suggestion is the normal-approximation design for the observed d and sd)."""
    base = B[:3]
    shift = 0.5 * equivalence_margin(estimate(base))  # inside the margin, not shown on 3
    values = [b + shift for b in base[::-1]]
    v = floor_verdict({"sw1": values}, {"sw1": base}, alpha=0.01)
    assert v.label == "undetermined"
    r = v.replicates_to_decide
    # the same estimates measured on r replicates (se shrinks by sqrt(3 / r)) are within the
    # margin, and on r - 1 they are not
    diff = Difference.between(estimate(values), estimate(base), None)
    assert diff.at(r).within(v.margin["sw1"], two_sided=False)
    assert not diff.at(r - 1).within(v.margin["sw1"], two_sided=False)
    assert diff.at(3).se == pytest.approx(diff.se)


def test_heun_at_9_nfe_on_a_small_design_is_undetermined_not_at_the_floor():
    """The issue's case: 200 x 3 samples cannot tell ode_heun at 9 NFE (cross-entropy 3.8
    against 1.9) from exact sampling, and cannot show it equal either. Seeds 0 and 1."""
    for seed in (0, 1):
        (rec,) = sd.compare(["gmm2d"], ["ode_heun"], [9], samples=200, replicates=3, seed=seed)
        assert rec.verdict == "undetermined" and not rec.at_floor, (seed, rec.p_value)
        assert rec.replicates_to_decide > 3


def test_exact_sampling_is_at_the_floor_at_the_default_design():
    """The target's own sampler, judged like a solver, is at the floor on both targets at the
    default 10 x 500 (its metrics differ from the reference's by sampling noise alone, far
    inside the margins: failing needs a 4.5-standard-error excursion), and a poor solver
    differs."""
    for seed in (0, 1):
        recs = sd.compare(["gmm2d", "gmm8d"], ["ode_euler"], [10], seed=seed)
        for r in recs:
            assert r.extra["exact_sampler_verdict"] == "at floor", (seed, r.target)
            assert r.verdict == "differs"


def _record(solver, nfe, coupled, floor_sw1=0.1):
    m = {"sw1": 0.1, "coupled": coupled}
    return Record("t", solver, solver, nfe, nfe, nfe, "linear", "uniform", 10, 2, 0, 0.0, m,
                  dict(m), {"sw1": 1.0}, False, {"sw1": floor_sw1}, dict(m),
                  {"alpha": 0.01, "pathwise_limit": "ode"})  # fmt: skip


def test_pathwise_column_needs_every_larger_run_below_a_quarter_of_the_floor_sw1():
    recs = [
        _record("a", 10, 0.05),
        _record("a", 20, 0.02),  # below 0.25 x 0.1
        _record("a", 50, 0.03),  # a relapse
        _record("a", 100, 0.002),
        _record("b", 10, 0.001),
        _record("c", 10, math.nan),  # no pathwise limit
    ]
    assert fewest_nfe_pathwise(recs) == {("t", "a"): 100, ("t", "b"): 10, ("t", "c"): None}


def test_inversions_name_a_column_that_ranks_against_the_coupled_error():
    recs = [_record("a", 10, 0.05), _record("a", 20, 0.01), _record("b", 10, 0.02),
            _record("b", 20, 0.001)]  # fmt: skip
    # a column that puts a at 10 and b at 20 inverts: b is more accurate at 10
    assert inversions(recs, {("t", "a"): 10, ("t", "b"): 20}) == [("t", "a", "b", 10)]
    assert inversions(recs, fewest_nfe_pathwise(recs)) == []


@pytest.mark.slow
def test_main_job_summary_never_inverts_the_order_of_discretisation_error():
    """The README main job's design (10 x 500, budgets 10..500) for the ODE solvers at three
    seeds: the pathwise column never ranks a solver before one with a lower coupled error,
    and neither does the floor column for Euler and Heun (the old "no significant
    difference" rule said Euler 20, Heun 99 at seed 0; at 20 NFE Euler's coupled error is in
    fact the lower, 0.028 against 0.046)."""
    budgets = [10, 20, 50, 100, 200, 500]
    solvers = ["ode_euler", "ode_heun", "ddim", "dpm_solver++:order=2:grid=logsnr"]
    for seed in (0, 1, 2):
        recs = sd.compare(["gmm2d"], solvers, budgets, seed=seed)
        assert inversions(recs, fewest_nfe_pathwise(recs)) == [], seed
        at = sd.evaluation.fewest_nfe_at_floor(recs)
        pair = {k: v for k, v in at.items() if k[1] in ("ode_euler", "ode_heun")}
        assert inversions(recs, pair) == [], (seed, pair)
