"""What a model brings to be judged on its own data: the ``Evaluator`` protocol.

``compare --model`` scores samples against the converged reference for any model. A model
that knows its data can add data-side metrics by giving its ``ModelSpec`` an evaluator. The
report then shows them without knowing the model: the evaluator says what its metrics are
called, how to print them, which are tested two-sided, what real data score (the data floor),
how to label that floor, the footnote that explains them, and which get a plot panel.

    metrics      names of the per-replicate values ``__call__`` returns
    two_sided    the subset tested in both directions (lower than real data is as suspect
                 as higher, e.g. a distance to the training set: memorisation)
    __call__(xs) xs (R, n, ...) samples -> {name: R values}
    floor(n, R)  the same metrics of real held-out data at sample size n
    presentation an ``EvaluatorPresentation``: table formats, the floor row's label, the
                 footnote, and plot panels {metric: y-axis label}
    likelihood_report(spec, **options) optional: a text report of the likelihood of the
                 model ``spec`` (the one this evaluator belongs to) on its data, for
                 ``scoresde likelihood --model``

The presentation is plain data, stored in each compare ``Record`` (``extra["evaluator"]``),
so tables and plots drawn later from ``results.json`` look the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@dataclass(frozen=True)
class EvaluatorPresentation:
    """How the report shows an evaluator's metrics (see the module doc)."""

    formats: Mapping[str, str]
    floor_label: str = "held-out data"
    footnote: str = ""
    panels: Mapping[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["formats"], out["panels"] = dict(self.formats), dict(self.panels)
        return out


@runtime_checkable
class Evaluator(Protocol):
    """Data-side metrics of a model's samples; see the module doc."""

    metrics: tuple[str, ...]
    two_sided: tuple[str, ...]
    presentation: EvaluatorPresentation

    def __call__(self, xs: Tensor) -> dict[str, list[float]]: ...

    def floor(self, n: int, replicates: int) -> dict[str, list[float]]: ...


def check_evaluator(evaluator: object) -> Evaluator | None:
    """``evaluator`` if it follows the protocol (or is None), else one error naming what lacks."""
    if evaluator is None:
        return None
    missing = [
        name
        for name in ("metrics", "two_sided", "presentation", "floor")
        if not hasattr(evaluator, name)
    ]
    if missing or not callable(evaluator):
        what = ", ".join(missing + ([] if callable(evaluator) else ["__call__"]))
        raise TypeError(f"the model's evaluator lacks {what} (see scoresde.models.Evaluator)")
    unknown = set(evaluator.metrics) - set(evaluator.presentation.formats)
    if unknown:
        raise ValueError(f"the evaluator's presentation has no format for {sorted(unknown)}")
    return evaluator
