"""Measuring samplers: ``compare`` (solvers x NFE budgets with replicates, common random
numbers, coupled errors and Welch tests against exact sampling), replicate estimates, and the
report (table, summary, JSON, CSV, plot)."""

from scoresde.evaluation.compare import (
    DEFAULT_BUDGETS,
    DEFAULT_SOLVERS,
    SCHEDULES,
    Record,
    SolverSpec,
    compare,
    convergence_orders,
    fewest_nfe_at_floor,
    steps_for_budget,
)
from scoresde.evaluation.estimates import (
    Estimate,
    estimate,
    floor_test,
    one_sample_p_value,
    welch_p_value,
)
from scoresde.evaluation.report import (
    SampleCollector,
    format_floor_summary,
    format_table,
    records_to_csv,
    records_to_json,
    summary,
    write_results,
    write_sample_grids,
)

__all__ = [
    "DEFAULT_BUDGETS",
    "DEFAULT_SOLVERS",
    "SCHEDULES",
    "Estimate",
    "Record",
    "SampleCollector",
    "SolverSpec",
    "compare",
    "convergence_orders",
    "estimate",
    "fewest_nfe_at_floor",
    "floor_test",
    "format_floor_summary",
    "format_table",
    "one_sample_p_value",
    "records_to_csv",
    "records_to_json",
    "steps_for_budget",
    "summary",
    "welch_p_value",
    "write_results",
    "write_sample_grids",
]
