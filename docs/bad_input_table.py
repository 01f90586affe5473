"""Print docs/bad-input.md: each bad input tried against the public API and what it gets.

    python docs/bad_input_table.py > docs/bad-input.md

The same cases (and many generated ones) are asserted in tests/test_bad_input.py.
"""

from __future__ import annotations

import math
import tempfile

import torch

import scoresde as sd
from scoresde.commands.generate import generate
from scoresde.evaluation import compare
from scoresde.likelihood import log_likelihood
from scoresde.models import ModelSpec

SDE = sd.VPSDE()


def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def score(x, t):
    return -0.5 * x


def S(**kw):
    args = {"shape": (4, 2), "steps": 5, "generator": gen(), **kw}
    return sd.sample(kw.pop("score", score), SDE, **{k: v for k, v in args.items() if k != "score"})


def nan_between(lo, hi):
    def f(x, t):
        bad = ((t > lo) & (t < hi)).reshape(-1, *([1] * (x.dim() - 1)))
        return torch.where(bad, torch.full_like(x, math.nan), -0.5 * x)

    return f


CONV = torch.nn.GroupNorm(2, 4)  # a network for (B, 4, 6) samples, given (4, 6)
SPEC = ModelSpec(sd.score_from_eps(lambda x, t: 0.1 * x, SDE), SDE, (2,))
X = torch.randn(3, 2, generator=gen(), dtype=torch.float64)

CASES = [
    ("sample", "state dtype float16 / bfloat16", lambda: S(dtype=torch.float16)),
    ("sample", "x_T of dtype int64", lambda: S(shape=None, x_T=torch.ones(4, 2, dtype=torch.long))),
    ("sample", "network returns float16 (plain score)", lambda: S(score=lambda x, t: (-x).half())),
    ("sample", "network returns shape (B, 1) for (B, 2)", lambda: S(score=lambda x, t: x[:, :1])),
    ("sample", "network returns int64", lambda: S(score=lambda x, t: x.long())),
    ("sample", "network returns a NumPy array", lambda: S(score=lambda x, t: x.numpy())),
    ("sample", "x_T non-contiguous (a transpose)", lambda: S(shape=None, x_T=torch.ones(2, 4).T)),
    ("sample", "x_T contains NaN", lambda: S(shape=None, x_T=torch.tensor([[math.nan, 0.0]]))),
    ("sample", "network NaN for t in (0.4, 0.6)", lambda: S(score=nan_between(0.4, 0.6), steps=10)),
    (
        "sample",
        "network NaN for t in (0.4, 0.6), adaptive_sde",
        lambda: S(score=nan_between(0.4, 0.6), solver="adaptive_sde"),
    ),
    (
        "sample",
        "network NaN for t in (0.4, 0.6), ode_dopri5",
        lambda: S(score=nan_between(0.4, 0.6), solver="ode_dopri5"),
    ),
    ("sample", "steps = 0", lambda: S(steps=0)),
    ("sample", "steps = 2.5", lambda: S(steps=2.5)),
    ("sample", "steps = 10^5 (euler_maruyama)", lambda: S(steps=100_000, shape=(2,))),
    ("sample", "steps = 10^7", lambda: S(steps=10**7)),
    (
        "sample",
        "steps = 1, every solver",
        lambda: [S(steps=1, solver=n) for n in sd.solvers.available()],
    ),
    ("sample", "eps = 1.0 (= T)", lambda: S(eps=1.0)),
    ("sample", "eps = NaN", lambda: S(eps=math.nan)),
    (
        "sample",
        "time_grid tensor with 1.5",
        lambda: S(time_grid=torch.tensor([1.5, 0.5]), steps=None),
    ),
    (
        "sample",
        "time_grid tensor increasing",
        lambda: S(time_grid=torch.tensor([0.2, 0.5]), steps=None),
    ),
    ("sample", "shape (0, 2)", lambda: S(shape=(0, 2))),
    ("sample", "shape and x_T disagree", lambda: S(shape=(3, 2), x_T=torch.zeros(4, 2))),
    ("sample", "solver 'foo'", lambda: S(solver="foo")),
    ("sample", "generator on cpu, device 'meta'", lambda: S(device="meta")),
    ("sample", "generator = 0 (a seed)", lambda: S(generator=0)),
    ("sample", "solver = sd.solvers.UniPC (the class)", lambda: S(solver=sd.solvers.UniPC)),
    (
        "sample",
        "time_grid tensor of 6 times, steps not given",
        lambda: sd.sample(score, SDE, (4, 2), time_grid=torch.linspace(1, 0.01, 6)),
    ),
    (
        "sample",
        "shape without the batch dimension",
        lambda: S(score=sd.score_from_eps(lambda x, t: CONV(x), SDE), shape=(4, 6)),
    ),
    ("solvers.get", "get('ddim', etta=0.5)", lambda: sd.solvers.get("ddim", etta=0.5)),
    ("solvers.get", "DDIM(eta=NaN)", lambda: sd.solvers.DDIM(eta=math.nan)),
    ("solvers.get", "PredictorCorrector(snr=5)", lambda: sd.solvers.PredictorCorrector(snr=5)),
    (
        "solvers.get",
        "AnnealedLangevin(step_size=1e-3)",
        lambda: sd.solvers.AnnealedLangevin(step_size=1e-3),
    ),
    ("solvers.get", "EDMHeun(s_churn=-1)", lambda: sd.solvers.EDMHeun(s_churn=-1)),
    ("solvers.get", "adaptive_sde rtol = 0", lambda: sd.solvers.get("adaptive_sde", rtol=0)),
    ("schedules", "LinearSchedule(5, 5)", lambda: sd.LinearSchedule(5, 5)),
    ("schedules", "LinearSchedule('a', 1)", lambda: sd.LinearSchedule("a", 1)),
    ("schedules", "LinearSchedule(0.1, inf)", lambda: sd.LinearSchedule(0.1, math.inf)),
    ("schedules", "CosineSchedule(s=-1)", lambda: sd.CosineSchedule(s=-1)),
    ("schedules", "DiscreteSchedule([0.5, 1.5])", lambda: sd.DiscreteSchedule([0.5, 1.5])),
    ("schedules", "DiscreteSchedule([])", lambda: sd.DiscreteSchedule([])),
    (
        "schedules",
        "LogAlphaBarSchedule(a NumPy function)",
        lambda: sd.LogAlphaBarSchedule(lambda t: torch.from_numpy(-(t.detach().numpy() ** 2))),
    ),
    ("SDEs", "VESDE(0, 50)", lambda: sd.VESDE(0, 50)),
    ("SDEs", "VPSDE(3)", lambda: sd.VPSDE(3)),
    ("SDEs", "sde.check_time(1.5)", lambda: SDE.check_time(1.5)),
    ("paths", "GaussianPath(1 + t, t)", lambda: sd.GaussianPath(lambda t: 1 + t, lambda t: t)),
    ("paths", "rectified_flow(shift=0)", lambda: sd.rectified_flow(shift=0)),
    ("adapters", "score_from_flow(net, 'rf')", lambda: sd.score_from_flow(lambda x, t: x, "rf")),
    ("adapters", "Score(net, sde, 'noise')", lambda: sd.Score(lambda x, t: x, SDE, "noise")),
    (
        "adapters",
        "score(x (4, 2), t (3,))",
        lambda: sd.score_from_eps(lambda x, t: x, SDE)(torch.zeros(4, 2), torch.zeros(3)),
    ),
    (
        "adapters",
        "score(x, t = 2.0) called directly",
        lambda: (
            sd.score_from_eps(lambda x, t: x, SDE)(torch.zeros(2, 2), torch.full((2,), 2.0)).shape
        ),
    ),
    ("compare", "nfe = [0]", lambda: compare(["gmm2d"], ["ode_euler"], [0])),
    ("compare", "samples = 1", lambda: compare(["gmm2d"], ["ode_euler"], [3], samples=1)),
    ("compare", "seed = -1", lambda: compare(["gmm2d"], ["ode_euler"], [3], seed=-1)),
    ("compare", "device = 'xyz'", lambda: compare(["gmm2d"], ["ode_euler"], [3], device="xyz")),
    ("compare", "targets = 0", lambda: compare(0, ["ode_euler"], [3])),
    ("compare", "solver spec 'ddim:order=2'", lambda: compare(["gmm2d"], ["ddim:order=2"], [3])),
    ("compare", "nfe = 2.5", lambda: compare(["gmm2d"], ["ode_euler"], 2.5)),
    ("compare", "nfe = None, solvers = 3", lambda: compare(["gmm2d"], 3, [3])),
    ("generate", "num = 0", lambda: generate(SPEC, tempfile.mkdtemp(), num=0)),
    (
        "generate",
        "num = 10^12 (10^9 shards)",
        lambda: generate(SPEC, tempfile.mkdtemp(), num=10**12),
    ),
    ("generate", "seed = 2^70", lambda: generate(SPEC, tempfile.mkdtemp(), num=3, seed=2**70)),
    ("generate", "spec = 'x'", lambda: generate("x", tempfile.mkdtemp(), num=3)),
    (
        "generate",
        "solver torchsde",
        lambda: generate(SPEC, tempfile.mkdtemp(), num=3, solver="torchsde"),
    ),
    ("log_likelihood", "x contains NaN", lambda: log_likelihood(score, SDE, X * math.nan)),
    ("log_likelihood", "x float16", lambda: log_likelihood(score, SDE, X.half())),
    ("log_likelihood", "eps = 1", lambda: log_likelihood(score, SDE, X, eps=1.0)),
    ("log_likelihood", "rtol = 0", lambda: log_likelihood(score, SDE, X, rtol=0)),
    (
        "log_likelihood",
        "score returns NaN",
        lambda: log_likelihood(lambda x, t: x * math.nan, SDE, X),
    ),
]


def outcome(fn) -> str:
    try:
        out = fn()
    except Exception as e:  # the point: show what each input gets
        return f"`{type(e).__name__}`: {str(e).replace('|', '/')}"
    if isinstance(out, sd.Solution):
        return f"works: samples {tuple(out.samples.shape)}, {out.samples.dtype}, NFE {out.nfe}"
    return f"works ({str(out)[:60]})" if not isinstance(out, list) else "works"


def main() -> None:
    print("# Bad input: what each one gets\n")
    print(
        "Each input either works correctly or raises one error that names the argument and the\n"
        "allowed range. Generated by `python docs/bad_input_table.py > docs/bad-input.md`;\n"
        "tests/test_bad_input.py asserts these and many hypothesis-generated variants.\n"
        "One deliberate exception: a `Score` adapter called directly with t outside [0, T]\n"
        "is not checked, because it is called inside sampling loops, where a check would read\n"
        "the tensor on the host every step; `sample` and the grids never pass such a t.\n"
    )
    print("| API | input | result |")
    print("| --- | --- | --- |")
    for api, label, fn in CASES:
        print(f"| {api} | {label} | {outcome(fn)} |")


if __name__ == "__main__":
    main()
