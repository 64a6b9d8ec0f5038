"""pytest configuration of the benchmark suite (collected only when bench/ is named).

Adds ``--fastlin-seconds`` (timing budget of one benchmark), puts the measured
machine limits into pytest-benchmark's machine info (so a ``--benchmark-json``
file carries them), and prints bench/report.py's table at the end of the run.
"""

from __future__ import annotations

import pytest

import report


def pytest_addoption(parser):
    group = parser.getgroup("fastlin bench")
    group.addoption("--fastlin-seconds", type=float, default=1.0,
                    help="timed seconds per benchmark (rounds are chosen to fill it; at least 3 rounds)")


def _limits():
    import machine

    return machine.limits()


def pytest_benchmark_update_machine_info(config, machine_info):
    if report.RESULTS:
        machine_info["fastlin_limits"] = _limits()


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own per-round tables
def pytest_terminal_summary(terminalreporter):
    if report.RESULTS:
        terminalreporter.write_sep("=", "fastlin per-step report")
        terminalreporter.write_line(report.format_report(report.RESULTS, _limits()))
