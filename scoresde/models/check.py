"""A sanity check of a model's adapter: does its score behave like the score of *some* data?

A wrong adapter (a missing time label, an ε-network passed as the score, the wrong prediction
type) still returns finite numbers, so sampling runs to completion and returns nonsense.
``check_model`` probes what every correctly adapted ε / x₀ / v / score network satisfies,
whatever its data, through its implied noise prediction ε̂(x, t) = -s(t) score(x, t).

**The prior end.** At t = T the signal is almost gone (m(T)/s(T) is 0.006 for the linear VP
schedule, 1/σ_max for VE), and Tweedie's formula gives ε̂ = (x - m x̂₀)/s = x/s(T) up to
m(T)/s(T) times the data's scale. On prior draws x = s(T) z:

- cos(ε̂, x) must not be negative: a negative one is a sign error, an ε-network passed as the
  score (the score is -ε/s) or a score network passed as ε;
- where ε̂ clearly follows x (cos > 0.5), its size must be that of x/s(T) within 30 % (data
  of rms up to 0.3 s(T)/m(T)): a network given the wrong time label (t in [0, 1] where it was
  trained on timesteps 0..999) takes the input for almost clean data and mis-sizes the noise;
  its implied x̂₀ = (x - s ε̂)/m is then far off any data's scale, and the message says how far;
- at t = T on prior draws the conditional mean cannot be larger than the noise itself
  (E|E[ε|x]|² <= E|ε|²), which the same 30 % bound covers from above.

Why nothing at low noise: there ε̂ depends on the data (for Gaussian data of unit variance it
is about s·x, small; for images near a low-dimensional set it is O(1)), so no data-free
expectation separates a wrong adapter from an unusual data set. A randomly initialised network
predicts ε̂ nearly independent of x (|cos| <= 0.5): the probe then has nothing to judge and
says so without failing. The check costs one network call on ``batch`` prior draws from its
own generator (the caller's random state is untouched).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

PRIOR_END_TOLERANCE = 0.3  # |rms(eps_hat) / rms(x / s) - 1| allowed when cos > 0.5
PRIOR_END_MAX_RATIO = 0.1  # the probe applies when m(T)/s(T) is below this


class ModelCheckWarning(UserWarning):
    """``check_model`` found an expectation a correctly adapted model fails. Silence it with
    ``warnings.simplefilter("ignore", ModelCheckWarning)``, ``check_model=False`` in Python or
    ``--no-model-check`` on the command line."""


@dataclass
class Probe:
    """One expectation: its name, whether it held (None: not applicable), and what was seen."""

    name: str
    passed: bool | None
    detail: str


@dataclass
class ModelCheck:
    """What ``check_model`` found: every probe, and the advice for the failed ones."""

    probes: list[Probe] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.passed is not False for p in self.probes)

    @property
    def failures(self) -> list[Probe]:
        return [p for p in self.probes if p.passed is False]

    def __str__(self) -> str:
        mark = {True: "ok", False: "FAILED", None: "n/a"}
        return "\n".join(f"{mark[p.passed]:>6}  {p.name}: {p.detail}" for p in self.probes)


ADVICE = (
    "check the adapter: the time label the network was trained with (e.g. "
    "time_label=scaled_time(1000) for a network trained on DDPM timesteps 0..999), the "
    "prediction type (eps, x0, v, flow or score: score_from_eps / score_from_x0 / score_from_v / "
    "score_from_flow, or "
    "the score itself) and the SDE/schedule"
)


def _rms(x: Tensor) -> float:
    return float(x.double().pow(2).mean().sqrt())


def _cos(a: Tensor, b: Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-300))


def check_model(
    spec, *, batch: int = 16, seed: int = 0, device=None, warn: bool = True
) -> ModelCheck:
    """Probe ``spec`` (a ``ModelSpec``: score, sde, shape) for a wrong adapter; see the module
    doc for the expectations. ``device``: where the model runs (default: its parameters'
    device, else CPU). With ``warn`` a failure is reported as a ``ModelCheckWarning`` naming
    the probe, what was measured and what to check."""
    sde, shape = spec.sde, tuple(spec.shape)
    if device is None:
        net = getattr(spec.score, "net", None)
        param = next(iter(getattr(net, "parameters", list)()), None)
        device = param.device if param is not None else "cpu"
    z = torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed)).to(device)
    T = float(sde.T)
    m_T, s_T = (float(v) for v in sde.marginal(torch.tensor([T], dtype=torch.float64)))
    with torch.no_grad():
        score = spec.probe_score(s_T * z, torch.full((batch,), T, device=z.device))
    e_T = -s_T * score.to(z.dtype)
    cos, ratio = _cos(e_T, z), _rms(e_T) / _rms(z)
    seen = f"cos(eps_hat, x) = {cos:.2f}, rms(eps_hat) / rms(x / s) = {ratio:.2f}"

    sign, size = "sign at t = T: cos(eps_hat, x) >= -0.5", "size at t = T: eps_hat ~ x / s(T)"
    report = ModelCheck()
    if m_T / s_T > PRIOR_END_MAX_RATIO:
        why = f"m(T)/s(T) = {m_T / s_T:.2g} is not small; nothing to judge"
        report.probes += [Probe(sign, None, why), Probe(size, None, why)]
    else:
        against = f"{seen}: eps_hat points against the noise"
        report.probes.append(Probe(sign, cos >= -0.5, against if cos < -0.5 else seen))
        if cos <= 0.5:
            detail = f"{seen}: eps_hat does not follow x (an untrained network?); nothing to judge"
            report.probes.append(Probe(size, None, detail))
        else:
            ok = abs(ratio - 1) <= PRIOR_END_TOLERANCE
            detail = seen
            if not ok and m_T > 0:  # at zero terminal SNR no x0 is implied
                implied_x0 = _rms(s_T * (z - e_T)) / m_T
                detail = f"{seen}: the implied x0 prediction has rms {implied_x0:.3g}"
            report.probes.append(Probe(size, ok, detail))

    if warn and not report.ok:
        lines = "; ".join(f"{p.name}: {p.detail}" for p in report.failures)
        warnings.warn(
            f"the model fails a sanity check ({lines}); {ADVICE}. "
            "(scoresde.check_model; silence with --no-model-check / check_model=False)",
            ModelCheckWarning,
            stacklevel=2,
        )
    return report
