"""Presets: the paper's grid, the quick grid's budget, and `fastlin reproduce` end to end."""

import pytest

from fastlin.cli import main
from fastlin.experiments import Grid, LRRule, preset_grid
from fastlin.experiments import presets as presets_module


def test_paper_preset_is_the_papers_grid():
    grid = preset_grid("figure1", "paper", backend="numpy")
    assert grid.depths[0] == 1 and grid.depths[-1] == 700 and len(grid.depths) == 13
    assert grid.widths[0] == 10 and grid.widths[-1] == 1000 and len(grid.widths) == 13
    assert set(grid.inits) == {"gaussian", "orthogonal"}
    assert grid.steps == 10_000 and grid.readout_steps == (1258, 10_000)
    assert grid.dtype == "float64" and grid.rtol_stop is None
    assert (grid.dx, grid.n, grid.dy) == (1024, 16, 10)
    assert grid.lr == LRRule("theorem", 0.5)
    assert len(grid.configs()) == 338
    fig2 = preset_grid("figure2", "paper", backend="numpy")
    assert fig2.depths == (50, 200, 400) and fig2.widths[0] == 50 and fig2.widths[-1] == 1200


def test_quick_preset_fits_the_two_core_budget():
    grid = preset_grid("figure1", "quick", backend="numpy")
    assert len(grid.depths) >= 5 and len(grid.widths) >= 10
    # Weight updates of the whole sweep if no run stopped early (9.5e10 now; the
    # measured sweep takes about 2 minutes on 2 cores because converged runs stop):
    # growing the grid past this needs a new measurement.
    weight_steps = sum(c.parameters * c.steps for c in grid.configs())
    assert weight_steps < 1.0e11
    assert grid.rtol_stop == 1e-10
    assert grid.threshold == 1e-3 and grid.readout_steps == (126, 1000)


def test_quick_figure2_reuses_quick_figure1_configurations():
    fig1 = {c.id for c in preset_grid("figure1", "quick").configs()}
    fig2 = {c.id for c in preset_grid("figure2", "quick").configs()}
    assert fig2 <= fig1


def test_unknown_figure_or_preset():
    with pytest.raises(ValueError, match="unknown figure 'figure3'"):
        preset_grid("figure3", "quick")
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset_grid("figure1", "huge")


def test_reproduce_runs_the_preset_and_draws_its_figure(tmp_path, capsys, monkeypatch):
    tiny = Grid(depths=(2, 4), widths=(4, 8), steps=30, dx=16, n=8, dy=4, backend="numpy",
                readout_steps=(10, 30), threshold=0.1)
    monkeypatch.setitem(presets_module._PRESETS, ("figure1", "quick"), lambda: tiny)
    monkeypatch.setattr("fastlin.plots.FORMATS", ("png",))
    out = tmp_path / "fig1"
    assert main(["reproduce", "figure1", "--preset", "quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "8 configurations: 8 done" in printed and "slope s =" in printed
    assert (out / "figure1.png").is_file() and (out / "figure1_summary.json").is_file()
    assert not (out / "figure2.png").exists()
