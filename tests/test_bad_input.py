"""Bad input as a contract: every input either works correctly or raises one clear error
that names the argument; never a silent wrong answer, a hang, or a traceback from inside torch.

Property tests (hypothesis, derandomised so CI is repeatable) over ``sample``, ``compare``,
``generate``, ``log_likelihood``, the schedule and SDE constructors, solver options and the
adapters. docs/bad-input.md lists the inputs and the error each one gets.
"""

import itertools
import math

import pytest
import torch
from conftest import ADAPTIVE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scoresde as sd
from scoresde.commands.generate import generate
from scoresde.evaluation import compare
from scoresde.likelihood import log_likelihood
from scoresde.models import ModelSpec

SOLVERS = sd.solvers.available()
FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
CLEAR = (ValueError, TypeError, FloatingPointError)  # NonFiniteSampleError is a FloatingPointError

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, -1.0, 1e-300, 1e300, math.nan, math.inf, -math.inf]),
)


def raises_naming(fn, *names):
    """fn() raises one of CLEAR with a one-line message naming one of ``names``."""
    with pytest.raises(CLEAR) as info:
        fn()
    msg = str(info.value)
    assert any(n in msg for n in names), msg
    assert "\n" not in msg, msg
    return info.value


def finite(v):
    return isinstance(v, float) and math.isfinite(v)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def linear_score(net_dtype=torch.float32):
    """-x / 2 (a Gaussian's score), returned in the network's dtype."""
    return lambda x, t: (-0.5 * x).to(net_dtype)


# --- sample --------------------------------------------------------------------------------------


@FUZZ
@given(
    shape=st.lists(st.integers(1, 3), min_size=1, max_size=5),
    state=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
    net=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
    solver=st.sampled_from(SOLVERS),
    steps=st.sampled_from([1, 2, 7]),
)
def test_sample_shapes_dtypes_and_step_counts(shape, state, net, solver, steps):
    sde = sd.VPSDE()

    def call():
        return sd.sample(linear_score(net), sde, tuple(shape), solver=solver, steps=steps,
                         dtype=state, generator=gen())  # fmt: skip

    if state in (torch.float16, torch.bfloat16):
        raises_naming(call, "dtype")
        return
    sol = call()
    assert sol.samples.shape == tuple(shape) and sol.samples.dtype == state
    assert bool(torch.isfinite(sol.samples).all()) and sol.nfe >= 1


@pytest.mark.parametrize("solver", ["euler_maruyama", "ddim", "ddpm_ancestral"])
def test_sample_with_a_hundred_thousand_steps(solver):
    sde = sd.VPSDE(sd.DiscreteSchedule.linear())
    sol = sd.sample(linear_score(), sde, (3,), solver=solver, steps=100_000,
                    generator=gen())  # fmt: skip
    assert sol.nfe == 100_000 and bool(torch.isfinite(sol.samples).all())


@FUZZ
@given(times=st.lists(NUMBERS, min_size=1, max_size=5))
def test_sample_time_grid_tensor(times):
    sde = sd.VPSDE()
    grid = torch.tensor(times, dtype=torch.float64)

    def call():
        return sd.sample(linear_score(), sde, (2, 2), solver="ddim", steps=None,
                         time_grid=grid, generator=gen())  # fmt: skip

    valid = all(finite(t) and 0 < t <= sde.T for t in times) and all(
        a > b for a, b in itertools.pairwise(times)
    )
    if valid:
        sol = call()
        assert sol.times[:-1].tolist() == times and bool(torch.isfinite(sol.samples).all())
    else:
        raises_naming(call, "time_grid")


@FUZZ
@given(eps=NUMBERS, rule=st.sampled_from(["uniform", "quadratic", "logsnr", "karras"]))
def test_sample_eps(eps, rule):
    sde = sd.VPSDE()

    def call():
        return sd.sample(linear_score(), sde, (2,), solver="ode_heun", steps=4, eps=eps,
                         time_grid=rule, generator=gen())  # fmt: skip

    if finite(eps) and 1e-12 < eps < sde.T:
        assert call().times[-2] == pytest.approx(eps)
    elif not (finite(eps) and 0 < eps < sde.T):
        raises_naming(call, "eps")


@FUZZ
@given(where=st.integers(0, 5), value=st.sampled_from([math.nan, math.inf, -math.inf]))
def test_non_finite_x_T_is_refused(where, value):
    x_T = torch.zeros(3, 2)
    x_T.view(-1)[where] = value
    raises_naming(lambda: sd.sample(linear_score(), sd.VPSDE(), x_T=x_T, steps=3), "x_T")


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_network_output_is_reported_with_the_step(solver, value):
    """The network returns NaN/Inf for t in [0.4, 0.6]: deterministic, so the replay finds the
    step (fixed-step solvers) or the adaptive solver reports where it stopped."""

    def score(x, t):
        bad = ((t > 0.4) & (t < 0.6)).reshape(-1, *([1] * (x.dim() - 1)))
        return torch.where(bad, torch.full_like(x, value), -0.5 * x)

    err = raises_naming(
        lambda: sd.sample(score, sd.VPSDE(), (4, 2), solver=solver, steps=10, generator=gen()),
        "NaN/Inf",
        "step size collapsed",
        "non-finite",
    )
    if solver not in ADAPTIVE and solver != "torchsde":
        assert "at step" in str(err) and "t = " in str(err)


@FUZZ
@given(solver=st.sampled_from(SOLVERS), seed=st.integers(0, 2**31))
def test_non_contiguous_x_T_gives_the_same_samples(solver, seed):
    base = torch.randn(2, 5, generator=gen(seed))
    strided = base.T  # (5, 2), not contiguous
    assert not strided.is_contiguous()

    steps = 2 if solver in ADAPTIVE else 5

    def run(x_T):
        return sd.sample(linear_score(), sd.VPSDE(), x_T=x_T, solver=solver, steps=steps,
                         generator=gen(seed)).samples  # fmt: skip

    assert torch.equal(run(strided), run(strided.contiguous()))


@FUZZ
@given(
    bad=st.sampled_from(["shape", "int", "numpy", "device"]),
    solver=st.sampled_from(SOLVERS),
    adapter=st.booleans(),
)
def test_network_returning_the_wrong_thing(bad, solver, adapter):
    def net(x, t):
        if bad == "shape":
            return x[..., :1]
        if bad == "int":
            return x.long()
        if bad == "numpy":
            return x.numpy()
        return torch.zeros(x.shape, device="meta")

    sde = sd.VPSDE()
    score = sd.score_from_eps(net, sde) if adapter else net
    if adapter and bad == "numpy":
        expected = ("shape", "tensor")
    else:
        expected = {"shape": ("shape",), "int": ("dtype",), "numpy": ("tensor",),
                    "device": ("meta", "device")}[bad]  # fmt: skip
    with pytest.raises((*CLEAR, AttributeError, RuntimeError)) as info:
        sd.sample(score, sde, (3, 2), solver=solver, steps=3, generator=gen())
    msg = str(info.value)
    assert any(e in msg for e in expected), msg


def test_generator_on_another_device_is_refused():
    raises_naming(
        lambda: sd.sample(linear_score(), sd.VPSDE(), (2,), device="meta", generator=gen()),
        "generator",
    )


def test_bad_shapes_and_names():
    sde = sd.VPSDE()
    for shape in [(), (0, 2), (3, -1)]:
        raises_naming(lambda s=shape: sd.sample(linear_score(), sde, s), "shape")
    raises_naming(lambda: sd.sample(linear_score(), sde, (3, 2), x_T=torch.zeros(4, 2)), "shape")
    raises_naming(lambda: sd.sample(linear_score(), sde, (2,), solver="nope"), "known solvers")
    raises_naming(lambda: sd.sample(linear_score(), sde, (2,), time_grid="nope"), "time_grid")
    raises_naming(lambda: sd.sample(linear_score(), sde, (2,), noise="nope"), "noise")
    raises_naming(lambda: sd.sample(linear_score(), "vp", (2,)), "sde")
    raises_naming(lambda: sd.sample(3, sde, (2,)), "score")
    raises_naming(lambda: sd.solvers.get("ddim", etta=0.5), "etta", "eta")


# --- constructors and options -----------------------------------------------------------------


@FUZZ
@given(a=NUMBERS, b=NUMBERS)
def test_linear_schedule_parameters(a, b):
    if finite(a) and finite(b) and 0 <= a < b:
        s = sd.LinearSchedule(a, b)
        assert float(s.beta(torch.tensor(1.0, dtype=torch.float64))) == pytest.approx(b)
    else:
        raises_naming(lambda: sd.LinearSchedule(a, b), "beta_min", "beta_max")


@FUZZ
@given(s=NUMBERS, max_beta=NUMBERS)
def test_cosine_schedule_parameters(s, max_beta):
    def call():
        return sd.CosineSchedule(s=s, max_beta=max_beta)

    if finite(s) and s >= 0 and (max_beta == math.inf or (finite(max_beta) and max_beta > 0)):
        ab = call().alpha_bar(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
        assert bool(torch.isfinite(ab).all()) and bool((torch.diff(ab) <= 0).all())
    else:
        raises_naming(call, "s ", "s must", "max_beta")


@FUZZ
@given(betas=st.lists(NUMBERS, min_size=0, max_size=6))
def test_discrete_schedule_betas(betas):
    if betas and all(finite(b) and 0 < b < 1 for b in betas):
        s = sd.DiscreteSchedule(betas)
        assert s.num_timesteps == len(betas)
    else:
        raises_naming(lambda: sd.DiscreteSchedule(betas), "betas")


@FUZZ
@given(lo=NUMBERS, hi=NUMBERS)
def test_ve_sde_parameters(lo, hi):
    if finite(lo) and finite(hi) and 0 < lo < hi:
        sde = sd.VESDE(lo, hi)
        assert float(sde.marginal(torch.tensor(1.0, dtype=torch.float64))[1]) == pytest.approx(hi)
    else:
        raises_naming(lambda: sd.VESDE(lo, hi), "sigma_min", "sigma_max")


@FUZZ
@given(t=NUMBERS, which=st.sampled_from(["marginal", "diffusion", "log_snr", "drift"]))
def test_sde_times_outside_the_interval(t, which):
    sde = sd.SubVPSDE()

    def call():
        if which == "drift":
            return sde.drift(torch.ones(2, 2), t)
        return getattr(sde, which)(t)

    t32 = float(torch.tensor(t, dtype=torch.float32)) if finite(t) else t  # times are float32
    if finite(t) and 0 <= t32 <= sde.T:
        out = call()  # log-SNR is +inf at t = 0 (s = 0), never NaN
        parts = out if isinstance(out, tuple) else [out]
        assert not any(bool(torch.isnan(v).any()) for v in parts)
    else:  # the coefficients are unchecked (sampling loops); entry points call check_time
        raises_naming(lambda: sde.check_time(t), "t must lie")


OPTIONS = {
    "ddim": ("eta", lambda v: 0 <= v <= 1),
    "edm_heun": ("s_churn", lambda v: v >= 0),
    "annealed_langevin": ("step_size", lambda v: 0 < v <= 2e-4),
    "pc": ("snr", lambda v: 0 < v <= 1),
    "adaptive_sde": ("rtol", lambda v: v > 0),
    "ode_dopri5": ("atol", lambda v: v > 0),
}


@FUZZ
@given(solver=st.sampled_from(sorted(OPTIONS)), value=NUMBERS)
def test_solver_numeric_options(solver, value):
    name, ok = OPTIONS[solver]
    if finite(value) and ok(value):
        configured = sd.solvers.get(solver, **{name: value})
        try:  # a valid but absurd value (snr = 1e300) may diverge: then a clear report
            sol = sd.sample(linear_score(), sd.VPSDE(), (4,), solver=configured,
                            steps=2 if solver in ADAPTIVE else 4, generator=gen())  # fmt: skip
        except sd.NonFiniteSampleError as err:
            assert "NaN/Inf" in str(err) and value > 1e3
            return
        assert sol.samples.shape == (4,)
    else:
        raises_naming(lambda: sd.solvers.get(solver, **{name: value}), name)


@FUZZ
@given(value=st.one_of(st.integers(-3, 0), st.sampled_from([2.5, "3", None, True])))
def test_integer_options(value):
    for name, fn in [
        ("steps_per_level", lambda v: sd.solvers.AnnealedLangevin(steps_per_level=v)),
        ("corrector_steps", lambda v: sd.solvers.PredictorCorrector(corrector_steps=v)),
        ("order", lambda v: sd.solvers.get("dpm_solver++", order=v)),
        ("num_timesteps", lambda v: sd.discrete_index(v)),
    ]:
        raises_naming(lambda fn=fn: fn(value), name)


def test_adapters():
    sde = sd.VPSDE()
    raises_naming(lambda: sd.score_from_eps(3, sde), "network", "callable")
    raises_naming(lambda: sd.score_from_v(lambda x, t: x, "vp"), "sde must be an SDE")
    raises_naming(lambda: sd.Score(lambda x, t: x, sde, "noise"), "prediction")
    score = sd.score_from_eps(lambda x, t: x, sde)
    raises_naming(lambda: score(torch.zeros(4, 2), torch.zeros(3)), "t must")
    half = sd.score_from_eps(lambda x, t: x.half(), sde)
    assert half(torch.ones(2, 2), torch.full((2,), 0.5)).dtype == torch.float32


# --- compare, generate, log_likelihood -------------------------------------------------------


BAD_ARGS = st.one_of(st.integers(-5, 1), st.sampled_from([2.5, math.nan, "4", None, 2**70]))


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    arg=st.sampled_from(["samples", "seed", "nfe", "device", "dtype", "targets", "schedule"]),
    value=BAD_ARGS,
)
def test_compare_arguments(arg, value):
    kw = {"targets": ["gmm2d"], "solvers": ["ode_euler"], "nfe": [3], "samples": 20}
    if arg == "nfe":
        kw["nfe"] = [value]
    elif arg == "dtype":
        kw["dtype"] = {-5: torch.float16, -4: torch.bfloat16}.get(value, torch.int32)
    else:
        kw[arg] = value
    is_int = isinstance(value, int) and not isinstance(value, bool)
    valid = is_int and {
        "samples": 2 <= value <= 10**7,
        "seed": 0 <= value < 2**63,
        "nfe": 1 <= value <= 10**6,
    }.get(arg, False)
    if valid:
        assert len(compare(**kw)) == 1
        return
    names = {"samples": "samples", "seed": "seed", "nfe": "NFE", "device": "device",
             "dtype": "dtype", "targets": "targets", "schedule": "schedule"}[arg]  # fmt: skip
    raises_naming(lambda: compare(**kw), names)


def _spec():
    sde = sd.VPSDE()
    return ModelSpec(sd.score_from_eps(lambda x, t: 0.1 * x, sde), sde, (2,))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(arg=st.sampled_from(["num", "batch_size", "shard_size", "steps", "seed", "device"]),
       value=BAD_ARGS)  # fmt: skip
def test_generate_arguments(tmp_path_factory, arg, value):
    out = tmp_path_factory.mktemp("gen")
    kw = {"num": 3, "steps": 3, "progress": False, arg: value}
    is_int = isinstance(value, int) and not isinstance(value, bool)
    valid = (
        is_int
        and {
            "num": 1 <= value <= 100_000 * 1000,  # at most 100,000 shards of the default 1000
            "batch_size": value >= 1,
            "shard_size": value >= 1,
            "steps": 1 <= value <= 10**6,
            "seed": 0 <= value < 2**63,
            "device": False,
        }[arg]
    )
    if valid:
        if arg != "num" or value <= 10:
            assert generate(_spec(), out, **kw).num == kw["num"]
        return
    raises_naming(lambda: generate(_spec(), out, **kw), arg)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(arg=st.sampled_from(["rtol", "atol", "eps", "probes"]), value=NUMBERS)
def test_log_likelihood_arguments(arg, value):
    sde = sd.VPSDE()
    x = torch.randn(3, 2, generator=gen(), dtype=torch.float64)
    kw = {arg: value}
    if arg == "probes":
        kw = {"trace": "hutchinson", "probes": int(value) if finite(value) else value}
    valid = {
        "rtol": finite(value) and value > 0,
        "atol": finite(value) and value > 0,
        "eps": finite(value) and 0 < value < 1,
        "probes": finite(value) and int(value) >= 1,
    }[arg]
    if valid and ((arg == "probes" and int(value) > 8) or value < 1e-12 or value > 1e6):
        return  # valid but pointlessly slow
    call = lambda: log_likelihood(lambda x, t: -x, sde, x, generator=gen(), **kw)  # noqa: E731
    if valid:
        assert bool(torch.isfinite(call().log_prob).all())
    else:
        raises_naming(call, arg)


def test_log_likelihood_data():
    sde = sd.VPSDE()
    score = lambda x, t: -x  # noqa: E731
    raises_naming(lambda: log_likelihood(score, sde, torch.tensor([[math.nan, 0.0]])), "x ")
    raises_naming(lambda: log_likelihood(score, sde, torch.ones(2, 2).half()), "dtype")
    raises_naming(lambda: log_likelihood(score, sde, torch.ones(2, 2, dtype=torch.long)), "dtype")
    raises_naming(lambda: log_likelihood(score, sde, torch.tensor(1.0)), "x must")
    raises_naming(lambda: log_likelihood(lambda x, t: x[:, :1], sde, torch.ones(2, 2)), "shape")


# -- the messages a new user met (issue 27, point 6) ---------------------------------------


def test_a_seed_instead_of_a_generator_is_named():
    sde = sd.VPSDE()
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator.*manual_seed\(0\)"):
        sd.sample(lambda x, t: -x, sde, (2, 2), steps=2, generator=0)
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator"):
        log_likelihood(lambda x, t: -x, sde, torch.zeros(2, 2), generator=7)


def test_a_solver_class_instead_of_a_name_or_instance_is_named():
    with pytest.raises(TypeError, match=r"got the class UniPC: write UniPC\(\.\.\.\)"):
        sd.sample(lambda x, t: -x, sd.VPSDE(), (2, 2), solver=sd.solvers.UniPC, steps=2)


def test_compare_takes_one_budget_and_a_comma_separated_solver_list():
    kw = {"targets": "gmm2d", "samples": 20, "replicates": 2}
    records = compare(solvers="ddim,ode_euler", nfe=10, **kw)
    assert {(r.solver, r.budget) for r in records} == {("ddim", 10), ("ode_euler", 10)}
    assert {r.budget for r in compare(solvers="ddim", nfe="5,10", **kw)} == {5, 10}
    raises_naming(lambda: compare(solvers="ddim", nfe=1.5, **kw), "nfe")
    raises_naming(lambda: compare(solvers="ddim", nfe="5,x", **kw), "nfe")


def test_a_shape_without_the_batch_dimension_is_explained():
    from scoresde.models import load_model

    spec = load_model("digits")  # its U-Net refuses a (1, 8, 8) input inside torch
    with pytest.raises(RuntimeError, match=r"x of shape \(1, 8, 8\).*\(B, \*spec.shape\)"):
        sd.sample(spec.score, spec.sde, spec.shape, solver="ddim", steps=2)


def test_a_grid_tensor_without_steps_takes_its_length():
    grid = torch.linspace(1.0, 1e-3, 6, dtype=torch.float64)
    sol = sd.sample(lambda x, t: -x, sd.VPSDE(), (2, 2), solver="ddim", time_grid=grid)
    assert sol.nfe == 6 and torch.equal(sol.times[:-1], grid)


def test_a_numpy_log_alpha_bar_is_refused_at_construction():
    import numpy as np

    def numpy_fn(t):
        return torch.from_numpy(-10.0 * np.asarray(t.detach()) ** 2)

    with pytest.raises(ValueError, match="log_alpha_bar_fn must be differentiable by autograd"):
        sd.LogAlphaBarSchedule(numpy_fn)
    # with its own beta it is fine
    sd.LogAlphaBarSchedule(numpy_fn, beta_fn=lambda t: 20.0 * t)


def test_a_usage_error_prints_no_progress_bar(capsys):
    from scoresde.commands.cli import main

    assert main(["compare", "--target", "gmm2d", "--nfe", "10", "--solvers", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("scoresde: error: solver 'nope': unknown solver"), err
    assert "compare:" not in err and "run/s" not in err


def test_the_bad_input_page_lists_every_registered_solver():
    from pathlib import Path

    page = (Path(__file__).parents[1] / "docs" / "bad-input.md").read_text()
    line = next(ln for ln in page.splitlines() if ln.startswith("| sample | solver 'foo' |"))
    listed = line.split("known solvers: ")[1].rstrip(" |").split(", ")
    # the package's own solvers (other tests register third-party ones), in registry order
    builtin = [n for n in sd.solvers.available()
               if type(sd.solvers.get(n)).__module__.startswith("scoresde.")]  # fmt: skip
    assert listed == builtin  # regenerate: python docs/bad_input_table.py


def test_sample_takes_an_nfe_budget_through_the_solvers_evaluations_per_step():
    def score(x, t):
        return -x

    for solver in sd.solvers.available():
        s = sd.solvers.get(solver)
        if s.adaptive:
            raises_naming(lambda s=s: sd.sample(score, sd.VPSDE(), (2, 2), solver=s, nfe=10),
                          "nfe")  # fmt: skip
            continue
        for budget in (s.planned_nfe(1), 7, 10, 20):
            if budget < s.planned_nfe(1):
                continue
            steps = max(n for n in range(1, budget + 1) if s.planned_nfe(n) <= budget)
            gen = torch.Generator().manual_seed(0)
            a = sd.sample(score, sd.VPSDE(), (2, 2), solver=s, nfe=budget, generator=gen)
            gen = torch.Generator().manual_seed(0)
            b = sd.sample(score, sd.VPSDE(), (2, 2), solver=s, steps=steps, generator=gen)
            assert torch.equal(a.samples, b.samples) and a.nfe == b.nfe <= budget, solver
    raises_naming(lambda: sd.sample(score, sd.VPSDE(), (2, 2), nfe=10, steps=10), "nfe")
    raises_naming(lambda: sd.sample(score, sd.VPSDE(), (2, 2), solver="ode_heun", nfe=0), "nfe")
