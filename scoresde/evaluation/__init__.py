"""Measuring samplers: ``compare`` (solvers x NFE budgets with replicates, common random
numbers, coupled errors and tests against exact sampling), replicate estimates, verdicts,
and the report (table, summary, JSON, CSV, plot, sample grids).

One concept per module: ``settings`` (defaults and argument checks), ``specs`` (solver specs
and the runs they make), ``problem`` (a target or a model), ``runner`` (running and scoring),
``estimates`` (replicate means, standard errors, tests), ``verdicts`` (across budgets),
``compare`` (the driver), ``record``, and the presentation: ``table``, ``files``, ``plots``,
``sample_grids``.
"""

from scoresde.core.path_specs import PATHS, path_from_spec
from scoresde.evaluation.compare import compare, run_problem
from scoresde.evaluation.estimates import (
    Estimate,
    Verdict,
    equivalence_margin,
    estimate,
    floor_test,
    floor_verdict,
    one_sample_p_value,
    welch_p_value,
)
from scoresde.evaluation.files import records_to_csv, records_to_json, summary, write_results
from scoresde.evaluation.record import Record
from scoresde.evaluation.sample_grids import SampleCollector, write_sample_grids
from scoresde.evaluation.settings import (
    DEFAULT_BUDGETS,
    DEFAULT_SOLVERS,
    SCHEDULES,
    CompareSettings,
)
from scoresde.evaluation.specs import SolverSpec, steps_for_budget
from scoresde.evaluation.table import format_floor_summary, format_table
from scoresde.evaluation.verdicts import (
    convergence_orders,
    fewest_nfe_at_floor,
    fewest_nfe_pathwise,
    inversions,
)

__all__ = [
    "DEFAULT_BUDGETS",
    "DEFAULT_SOLVERS",
    "PATHS",
    "SCHEDULES",
    "CompareSettings",
    "Estimate",
    "Record",
    "SampleCollector",
    "SolverSpec",
    "Verdict",
    "compare",
    "convergence_orders",
    "equivalence_margin",
    "estimate",
    "fewest_nfe_at_floor",
    "fewest_nfe_pathwise",
    "floor_test",
    "floor_verdict",
    "format_floor_summary",
    "format_table",
    "inversions",
    "one_sample_p_value",
    "path_from_spec",
    "records_to_csv",
    "records_to_json",
    "run_problem",
    "steps_for_budget",
    "summary",
    "welch_p_value",
    "write_results",
    "write_sample_grids",
]
