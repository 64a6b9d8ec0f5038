"""Critical widths m*(L) and the fit log m* = s log L + c, on synthetic records."""

import json
import math

import numpy as np
import pytest

from fastlin.experiments import (Config, Grid, RunRecord, critical_widths, figure1_summary,
                                 fit_slope, log_spaced_ints, relative_loss_at, write_summary)

STEPS = 20


def fake_record(init, depth, width, rel_final, seed=0, status=None):
    """A record whose relative loss falls linearly in log from 1 to ``rel_final`` at t = STEPS."""
    config = Config(init=init, depth=depth, width=width, seed=seed, steps=STEPS)
    if math.isnan(rel_final):
        loss = np.full(STEPS + 1, np.nan)
        loss[0] = 2.0
        status = status or "diverged"
    else:
        loss = 2.0 * np.exp(np.linspace(0.0, math.log(rel_final), STEPS + 1))
    return RunRecord(config=config, loss=loss, status=status or "completed", steps_run=STEPS,
                     seconds=0.0, lr=1.0, backend="numpy")


def synthetic_records(depths, widths, critical):
    """Converged (1e-6) iff m >= critical(init, L), else stuck (0.9)."""
    return [fake_record(init, L, m, 1e-6 if m >= critical(init, L) else 0.9)
            for init in ("gaussian", "orthogonal") for L in depths for m in widths]


def test_fit_slope_recovers_an_exact_power_law():
    critical = {L: 3.0 * L**0.8 for L in (2, 4, 8, 16, 32)}
    fit = fit_slope(critical)
    assert fit.slope == pytest.approx(0.8, abs=1e-12)
    assert fit.intercept == pytest.approx(math.log(3.0), abs=1e-12)
    assert fit.points == 5
    assert fit.width_at(10) == pytest.approx(3.0 * 10**0.8)


def test_fit_slope_uses_only_depths_where_m_star_exists():
    fit = fit_slope({2: 10, 4: 20, 8: None, 16: 80, 32: None})
    assert fit.points == 3 and fit.depths == [2, 4, 16]
    assert fit.slope == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(fit_slope({2: 10, 4: None}).slope)
    assert fit_slope({2: 10, 4: None}).points == 1


@pytest.mark.parametrize("true_slope", [1.0, 0.6])
def test_slope_from_a_width_grid_matches_the_known_slope(true_slope):
    depths = log_spaced_ints(2, 512, 9)
    widths = log_spaced_ints(4, 8192, 45)  # ratio ~1.19 between widths
    records = synthetic_records(depths, widths, lambda init, L: 3 * L**true_slope
                                if init == "gaussian" else 20)
    critical = critical_widths(records, STEPS, 1e-2)
    first_above_20 = min(m for m in widths if m >= 20)
    assert critical["orthogonal"] == {L: first_above_20 for L in depths}
    for L in depths:  # the smallest grid width above the true critical width
        above = [m for m in widths if m >= 3 * L**true_slope]
        assert critical["gaussian"][L] == above[0]
    assert fit_slope(critical["gaussian"]).slope == pytest.approx(true_slope, abs=0.03)
    assert fit_slope(critical["orthogonal"]).slope == pytest.approx(0.0, abs=1e-12)


def test_critical_width_is_none_where_no_width_converges_and_diverged_never_counts():
    records = [fake_record("gaussian", 8, 16, 0.5), fake_record("gaussian", 8, 32, math.nan),
               fake_record("gaussian", 8, 64, 1e-4), fake_record("gaussian", 16, 64, 0.5)]
    critical = critical_widths(records, STEPS, 1e-2)
    assert critical == {"gaussian": {8: 64, 16: None}}
    table = relative_loss_at(records, STEPS)
    assert table["gaussian", 8, 32] == math.inf


def test_median_over_seeds():
    records = [fake_record("orthogonal", 4, 16, v, seed=s) for s, v in enumerate([1e-4, 0.5, 1e-3])]
    assert relative_loss_at(records, STEPS)["orthogonal", 4, 16] == pytest.approx(1e-3)
    assert critical_widths(records, STEPS, 1e-2)["orthogonal"][4] == 16
    records[0] = fake_record("orthogonal", 4, 16, 0.9, seed=0)
    assert critical_widths(records, STEPS, 1e-2)["orthogonal"][4] is None


def test_figure1_summary_is_json_with_the_required_fields(tmp_path):
    depths, widths = (4, 8, 16, 32), (8, 16, 32, 64, 128)
    records = synthetic_records(depths, widths, lambda init, L: 2 * L if init == "gaussian" else 16)
    grid = Grid(depths=depths, widths=widths, steps=STEPS, readout_steps=(5, STEPS), threshold=1e-2)
    summary = figure1_summary(grid, records)
    path = write_summary(summary, tmp_path / "figure1_summary.json")
    back = json.loads(path.read_text())
    assert back["step"] == STEPS and back["threshold"] == 1e-2
    assert back["slope"]["gaussian"] == pytest.approx(1.0, abs=1e-9)
    assert back["slope"]["orthogonal"] == pytest.approx(0.0, abs=1e-9)
    assert back["depths_in_fit"] == {"gaussian": 4, "orthogonal": 4}
    assert back["critical_width"]["gaussian"] == {"4": 8, "8": 16, "16": 32, "32": 64}
    # At t = 5 the losses are only 10^(-6/4) down: nothing is below threshold, no slope.
    assert back["by_step"]["5"]["gaussian"] == {"slope": None, "depths_in_fit": 0}
    assert back["runs"]["finished"] == len(records)
