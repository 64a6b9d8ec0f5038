"""Sweeps over inits x depths x widths x seeds, a resumable result store, executors,
presets for the paper's figures and the critical-width analysis.

Typical use::

    from fastlin.experiments import preset_grid, run_sweep, ResultStore, figure1_summary

    grid = preset_grid("figure1", "quick")
    run_sweep(grid, "results/figure1")                  # resumable; threads by default
    records = ResultStore("results/figure1").load_grid(grid)
    print(figure1_summary(grid, records)["slope"])

Modules: ``grid`` (configurations, ids, TOML grids), ``store`` (atomic
per-configuration files, tidy CSV), ``integrity`` (what both stores share:
atomic writes, checked reads, damaged files moved aside, several writers at
once), ``check`` (``fastlin check DIR``), ``task`` (train one configuration),
``executors`` (threads, processes, Dask; registry for batched executors),
``runner`` (the resumable sweep, run-time estimate), ``presets``,
``analysis`` (critical widths and slopes); ``study`` (generic resumable
experiments of JSON configurations with array results) with the NTK studies
of ``ntk_studies`` (``run_study("ntk-width", "quick", "results/ntk-width")``).
"""

from .analysis import (SlopeFit, critical_widths, figure1_summary, fit_slope, format_summary,
                       relative_loss_at, write_summary)
from .executors import (EXECUTORS, DaskExecutor, Executor, ProcessExecutor, ThreadExecutor,  # noqa: F401
                        default_workers, make_executor, register_executor)
from .grid import Config, Grid, GridError, LRRule, log_spaced_ints
from .presets import FIGURES, PRESET_NAMES, preset_grid
from .runner import SweepSummary, estimate_sweep_seconds, format_seconds, run_sweep  # noqa: F401
from .store import ResultStore, RunRecord
from .study import Study, StudyRecord, get_study, register_study, run_study, study_names
from .task import RunFailure, run_config

# What users call; the CLI also uses default_workers and format_seconds.
__all__ = [
    "Config", "Executor", "FIGURES", "Grid", "GridError", "LRRule", "PRESET_NAMES", "ResultStore",
    "RunFailure", "RunRecord", "SlopeFit", "Study", "StudyRecord", "SweepSummary", "critical_widths",
    "estimate_sweep_seconds", "figure1_summary", "fit_slope", "format_summary", "get_study", "log_spaced_ints",
    "make_executor", "preset_grid", "register_executor", "register_study", "relative_loss_at", "run_config",
    "run_study", "run_sweep", "study_names", "write_summary",
]
