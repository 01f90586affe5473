"""scoresde.evaluation: replicate estimates, the floor test, references and coupled errors."""

import math
import statistics

import pytest
import torch
from scipy import stats

import scoresde as sd
from scoresde import metrics
from scoresde.evaluation import (
    Record,
    convergence_orders,
    estimate,
    fewest_nfe_at_floor,
    floor_test,
    one_sample_p_value,
    welch_p_value,
)
from scoresde.evaluation.targets import TARGETS, GaussianMixture, mixture_2d

VAR = 0.5  # the Gaussian target N(0, VAR I) in 2-D, whose probability-flow map is linear


@pytest.fixture
def gauss(monkeypatch):
    target = GaussianMixture([1.0], [[0.0, 0.0]], [[VAR, VAR]])
    monkeypatch.setitem(TARGETS, "gauss", lambda: target)
    return "gauss"


def test_estimate_by_hand():
    e = estimate([1.0, 2.0, 3.0, 6.0])
    assert e.mean == 3.0 and e.replicates == 4
    assert e.se == pytest.approx(math.sqrt((4 + 1 + 0 + 9) / 3 / 4))
    assert math.isnan(estimate([5.0]).se)
    assert math.isnan(estimate([1.0, math.inf]).se) and estimate([1.0, math.inf]).mean == math.inf
    with pytest.raises(ValueError, match="no replicate"):
        estimate([])


def test_welch_p_value_is_scipy_and_handles_the_edges():
    a, b = [0.31, 0.35, 0.29, 0.40, 0.33], [0.30, 0.28, 0.27, 0.31, 0.29]
    ref = stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue
    assert welch_p_value(a, b) == pytest.approx(ref, rel=1e-12)
    assert welch_p_value(b, a) == pytest.approx(1 - ref, rel=1e-9)
    assert welch_p_value(a, b, "two-sided") == pytest.approx(2 * ref, rel=1e-9)
    assert welch_p_value(a, a) == 1.0  # a converged solver equal to its reference
    assert welch_p_value([1.0, 1.0], [0.0, 0.0]) == 0.0  # a noiseless difference
    assert welch_p_value([math.nan, 1.0], b) == 0.0  # a diverged run is never at the floor
    with pytest.raises(ValueError, match="at least two"):
        welch_p_value([1.0], [1.0, 2.0])


def test_one_sample_p_value_against_a_known_expectation():
    a = [1.82, 1.79, 1.85, 1.80, 1.84]
    ref = stats.ttest_1samp(a, 1.78, alternative="two-sided").pvalue
    assert one_sample_p_value(a, 1.78, "two-sided") == pytest.approx(ref, rel=1e-12)
    assert one_sample_p_value([0.0, 0.0], 0.0) == 1.0
    assert one_sample_p_value([1.0, 1.0], 0.0) == 0.0 and one_sample_p_value([math.inf, 0], 0) == 0
    # floor_test tests "xent" against the known entropy, not the baseline's replicates
    base = {"xent": [1.70, 1.90, 1.75, 1.85]}
    p, at = floor_test({"xent": a}, base, 0.01, ("xent",), expected={"xent": 1.78})
    assert p["xent"] == pytest.approx(ref, rel=1e-12) and at == (ref >= 0.01)


def test_floor_test_uses_bonferroni_over_the_metrics():
    base = {"sw1": [0.0, 0.1, 0.2, 0.1], "xent": [1.0, 1.1, 0.9, 1.0]}
    # a shift whose one-sided p is between alpha / 2 and alpha: significant alone, not after
    # the correction for two metrics
    shifted = {"sw1": [0.1, 0.2, 0.3, 0.2], "xent": base["xent"]}
    p, at_floor = floor_test(shifted, base, alpha=0.1, two_sided=("xent",))
    assert 0.05 < p["sw1"] < 0.1 and p["xent"] == 1.0 and at_floor
    p, at_floor = floor_test(shifted, base, alpha=0.2, two_sided=("xent",))
    assert not at_floor
    # xent is two-sided: a solver below the exact cross-entropy is flagged too
    low = {"sw1": base["sw1"], "xent": [v - 0.5 for v in base["xent"]]}
    assert not floor_test(low, base, alpha=0.01, two_sided=("xent",))[1]
    assert floor_test(low, base, alpha=0.01)[1]  # one-sided: lower is not worse


@pytest.mark.slow
def test_reported_standard_error_matches_the_spread_over_20_repeats():
    """20 independent compare runs (seeds 0-19, 10 replicates of n = 100 each): the standard
    deviation of their 20 reported means must agree with the typical reported standard error
    (root mean square) within a factor of 1.5. Measured ratios, sd / rms(se): sw1 0.92, mmd
    1.13, xent 1.09, coupled 1.06. The sd of 20 values is itself uncertain by about 16 %, so
    1.5 is three of its standard deviations."""
    runs = [
        sd.compare(
            ["gmm2d"],
            ["ode_euler", "euler_maruyama"],
            [20],
            samples=100,
            seed=s,
            sde_reference=("euler_maruyama", 200),
        )
        for s in range(20)
    ]
    for solver in ("ode_euler", "euler_maruyama"):
        for key in ("sw1", "mmd", "xent", "coupled"):
            rec = [next(r for r in run if r.solver == solver) for run in runs]
            spread = statistics.stdev(r.metrics[key] for r in rec)
            rms_se = math.sqrt(statistics.fmean(r.stderr[key] ** 2 for r in rec))
            assert 1 / 1.5 < spread / rms_se < 1.5, (solver, key, spread, rms_se)


def test_reference_is_the_closed_form_flow_and_heun_outranks_euler(gauss):
    """On N(0, VAR I) the probability-flow ODE from T to eps is x_eps = sqrt(v_eps / v_T) x_T
    (v = m^2 VAR + s^2), and the final denoiser multiplies by m VAR / v_eps. compare's dopri5
    reference must equal that map; Euler and Heun, whose true errors differ by a known factor
    (both are linear maps of x_T too), must be ranked by the coupled error on every seed, and
    their measured orders must be 1 and 2."""
    sde = sd.VPSDE()

    def v(t):
        m, s = sde.marginal(torch.tensor(t, dtype=torch.float64))
        return float(m * m * VAR + s * s), float(m)

    (v_T, _), (v_e, m_e) = v(1.0), v(1e-3)
    gain = math.sqrt(v_e / v_T) * m_e * VAR / v_e
    for seed in range(5):
        recs = sd.compare([gauss], ["ode_euler", "ode_heun"], [40, 80, 160, 320], samples=200,
                          replicates=2, seed=seed, dtype=torch.float64)  # fmt: skip
        x_T = sde.prior_sample((400, 2), generator=torch.Generator().manual_seed(seed),
                               dtype=torch.float64)  # fmt: skip
        exact = x_T.double() * gain  # compare draws x_T in float64 here
        # the reference is not exposed; its floor metrics are those of the exact map's output
        assert recs[0].floor["mean_err"] == pytest.approx(
            statistics.fmean(
                metrics.mean_error(exact[i * 200 : (i + 1) * 200], TARGETS[gauss]())
                for i in range(2)
            ),
            rel=1e-6,
        )
        by = {(r.solver, r.budget): r.metrics["coupled"] for r in recs}
        for b in (80, 160, 320):  # at 20 NFE Heun's 10 steps still lose to Euler's 20
            assert by[("ode_heun", b)] < by[("ode_euler", b)]
        orders = convergence_orders(recs, min_error=1e-9)
        assert orders[(gauss, "ode_euler")] == pytest.approx(1.0, abs=0.1)
        assert orders[(gauss, "ode_heun")] == pytest.approx(2.0, abs=0.15)


def test_sde_solvers_converge_pathwise_to_the_reverse_sde_reference():
    """Same x_T, same Brownian path: Euler-Maruyama's coupled error against the 4000-step
    reference falls like NFE^-1 (measured orders 1.07-1.13 on the built-in targets)."""
    recs = sd.compare(["gmm2d"], ["euler_maruyama", "pc"], [25, 50, 100, 200], samples=200, seed=0)
    em = sorted((r.nfe, r.metrics["coupled"]) for r in recs if r.solver == "euler_maruyama")
    assert [e for _, e in em] == sorted((e for _, e in em), reverse=True)
    assert convergence_orders(recs)[("gmm2d", "euler_maruyama")] == pytest.approx(1.0, abs=0.2)
    # pc's Langevin noise is not a function of the Brownian path: no coupled error
    assert all(math.isnan(r.metrics["coupled"]) for r in recs if r.solver == "pc")


def test_pathwise_limits():
    get = sd.solvers.get
    assert get("ode_heun").pathwise_limit == "ode" and get("dpm_solver++").pathwise_limit == "ode"
    for name in ("euler_maruyama", "reverse_diffusion", "ddpm_ancestral", "sde_dpm_solver++"):
        assert get(name).pathwise_limit == "reverse_sde"
    for name in ("pc", "annealed_langevin", "adaptive_sde"):
        assert get(name).pathwise_limit is None
    assert [get("ddim", eta=e).pathwise_limit for e in (0.0, 0.5, 1.0)] == [
        "ode",
        None,
        "reverse_sde",
    ]
    assert get("edm_heun", s_churn=1.0).pathwise_limit is None


def _record(solver: str, nfe: int, at_floor: bool, coupled: float = math.nan) -> Record:
    m = {"sw1": 0.0, "coupled": coupled}
    return Record("t", solver, solver, nfe, nfe, nfe, "linear", "uniform", 10, 2, 0, 0.0, m,
                  dict(m), {"sw1": 1.0}, at_floor, m, dict(m), {"alpha": 0.01})  # fmt: skip


def test_fewest_nfe_at_the_floor_needs_every_larger_run_at_the_floor():
    recs = [
        _record("a", 10, False),
        _record("a", 20, True),
        _record("a", 50, False),  # a relapse: the floor starts after it
        _record("a", 100, True),
        _record("b", 10, True),
        _record("b", 20, True),
        _record("c", 10, True),
        _record("c", 20, False),
    ]
    assert fewest_nfe_at_floor(recs) == {("t", "a"): 100, ("t", "b"): 10, ("t", "c"): None}


def test_convergence_order_ignores_round_off_and_unpaired_solvers():
    recs = [_record("a", n, True, 3.0 * n**-2) for n in (10, 20, 40)]
    recs.append(_record("a", 1000, True, 1e-6))  # below the float32 round-off level: left out
    recs += [_record("b", n, True) for n in (10, 20, 40)]
    orders = convergence_orders(recs)
    assert orders[("t", "a")] == pytest.approx(2.0) and orders[("t", "b")] is None


def test_mmd_to_the_target_is_unbiased_and_closed_form():
    g = mixture_2d()
    h = metrics.median_bandwidth(g.sample(2000, torch.Generator().manual_seed(0)))
    vals = [metrics.mmd_to_target(g.sample(500, torch.Generator().manual_seed(s)), g, h)
            for s in range(1, 41)]  # fmt: skip
    # exact samples: the estimate is unbiased for 0 (measured mean -1.6e-5, s.e. 3.4e-5)
    assert abs(statistics.fmean(vals)) < 3 * statistics.stdev(vals) / math.sqrt(len(vals))
    # a Gaussian sample N(a, I) against the target N(0, I) in 1-D, bandwidth h:
    # MMD^2 = 2 sqrt(h^2 / (h^2 + 2)) (1 - exp(-a^2 / (2 (h^2 + 2))))
    one = GaussianMixture([1.0], [[0.0]], [[1.0]])
    a, h = 0.8, 1.3
    x = torch.randn(2000, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64) + a
    exact = 2 * math.sqrt(h * h / (h * h + 2)) * (1 - math.exp(-(a * a) / (2 * (h * h + 2))))
    assert metrics.mmd_to_target(x, one, h) == pytest.approx(exact, abs=0.01)


def test_sliced_w1_of_replicates_is_each_replicates_own():
    g = mixture_2d()
    xs = torch.stack([g.sample(300, torch.Generator().manual_seed(s)) for s in range(3)])
    batched = metrics.sliced_wasserstein_exact_replicates(xs, g, projections=16)
    for r in range(3):
        single = metrics.sliced_wasserstein_exact(xs[r], g, projections=16)
        assert float(batched[r]) == pytest.approx(single, rel=1e-12)


def test_user_model_metrics_compare_against_the_next_replicates_reference():
    recs = sd.compare(
        model="examples/user_model.py:build",
        solvers=["ode_heun", "ddim"],
        nfe=[10, 100],
        samples=100,
        replicates=3,
        reference=("ode_heun", 200),
    )
    assert set(recs[0].metrics) == {"sw1", "mmd", "coupled"}
    heun = {r.budget: r for r in recs if r.solver == "ode_heun"}
    assert heun[100].metrics["coupled"] < heun[10].metrics["coupled"]
    assert heun[100].at_floor and "ode_heun" in heun[100].extra["reference"]
    assert recs[0].floor["coupled"] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"replicates": 1}, "replicates must be"),
        ({"alpha": 1.5}, "alpha must lie in (0, 1)"),
        ({"reference": ("nope", 10)}, "unknown solver 'nope'"),
        ({"sde_reference": ("euler_maruyama", 0)}, "sde_reference count"),
        ({"samples": 10**6, "replicates": 100}, "samples x replicates"),
    ],
)
def test_compare_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sd.compare(["gmm2d"], ["ode_euler"], [10], **kwargs)


def test_adaptive_ladder_stops_after_passing_the_largest_budget():
    """rk45's tolerance ladder starts at rtol 0.3 (about 15 NFE on gmm2d): with a largest
    budget of 10 that first run already passes it, so the ladder ends there."""
    records = sd.compare(["gmm2d"], ["ode_rk45"], [10], samples=50, replicates=2)
    assert len(records) == 1 and records[0].nfe > 10
    records = sd.compare(["gmm2d"], ["ode_rk45"], [500], samples=50, replicates=2)
    assert len(records) == 9  # the whole ladder stays below 500 NFE


def test_p_values_equal_scipys_t_tests_and_compare_runs_without_warnings():
    import warnings

    import numpy as np
    import scipy.stats as st

    from scoresde.evaluation.estimates import one_sample_p_value, welch_p_value

    rng = np.random.default_rng(0)
    for _ in range(100):
        a, b = rng.normal(size=rng.integers(2, 12)), rng.normal(0.3, 2, size=rng.integers(2, 12))
        for alt in ("greater", "two-sided"):
            want = st.ttest_ind(a, b, equal_var=False, alternative=alt).pvalue
            assert welch_p_value(list(a), list(b), alt) == pytest.approx(want, rel=1e-12)
            want = st.ttest_1samp(a, 0.2, alternative=alt).pvalue
            assert one_sample_p_value(list(a), 0.2, alt) == pytest.approx(want, rel=1e-12)
    # nearly identical replicate values made scipy warn of precision loss on every run
    assert welch_p_value([1.0, 1.0 + 1e-15, 1.0], [1.0, 1.0, 1.0 - 1e-15]) > 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sd.compare(targets="gmm2d", solvers="ode_euler,ddim", nfe=10, samples=50, replicates=2)
