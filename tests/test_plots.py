"""Figures are drawn from saved results only, as PNG and PDF."""

import json
import math

import numpy as np
import pytest

from fastlin import plots
from fastlin.experiments import Grid, ResultStore, RunRecord

STEPS = 50


def make_store(tmp_path, grid):
    """A store filled with synthetic records: Gaussian nets need m >= 2L, orthogonal m >= 8."""
    store = ResultStore(tmp_path).create()
    store.save_grid(grid)
    for config in grid.configs():
        need = 2 * config.depth if config.init == "gaussian" else 8
        final = 1e-8 if config.width >= need else 0.7
        loss = 3.0 * np.exp(np.linspace(0.0, math.log(final), STEPS + 1))
        status = "completed"
        if config.init == "gaussian" and config.width == 4 and config.depth == 32:
            loss[10:] = np.nan
            status = "diverged"
        store.save(RunRecord(config, loss, status, STEPS if status == "completed" else 10, 0.0,
                             1e-3, "numpy"))
    return store


@pytest.fixture
def grid():
    return Grid(depths=(2, 4, 8, 16, 32), widths=(4, 8, 16, 32, 64), steps=STEPS,
                readout_steps=(10, STEPS), threshold=1e-2)


def test_plot_store_writes_png_pdf_and_summary(tmp_path, grid):
    make_store(tmp_path, grid)
    drawn = plots.plot_store(tmp_path)
    for name in ("figure1", "figure2"):
        assert sorted(p.suffix for p in drawn[name]) == [".pdf", ".png"]
        for path in drawn[name]:
            assert path.stat().st_size > 5000
        assert drawn[name][0].read_bytes()[:4] in (b"\x89PNG", b"%PDF")
    summary = json.loads((tmp_path / "figure1_summary.json").read_text())
    assert summary["slope"]["gaussian"] == pytest.approx(1.0, abs=0.05)
    assert summary["slope"]["orthogonal"] == pytest.approx(0.0, abs=1e-9)


@pytest.fixture
def png_only(monkeypatch):
    monkeypatch.setattr(plots, "FORMATS", ("png",))


def test_figure1_marks_missing_configurations_and_still_draws(tmp_path, grid, png_only):
    store = make_store(tmp_path, grid)
    for config in grid.configs()[::3]:
        store.path(config.id).unlink()
    paths = plots.figure1(grid, store.load_grid(grid), tmp_path / "partial")
    assert all(p.exists() for p in paths)


@pytest.fixture
def drawn_figures(monkeypatch):
    """The Figure objects the figure functions would save, instead of files."""
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, stem, formats=None: figures.append(fig) or [])
    return figures


def _legend_texts(fig):
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_figure1_hatches_the_cells_of_missing_configurations(tmp_path, drawn_figures):
    grid = Grid(depths=(2, 4), widths=(4, 8, 16), seeds=(0, 1), steps=STEPS, readout_steps=(10, STEPS))
    store = make_store(tmp_path, grid)
    whole_cell = [c for c in grid.configs() if (c.init, c.depth, c.width) == ("gaussian", 4, 16)]
    half_cell = [c for c in grid.configs() if (c.init, c.depth, c.width, c.seed) == ("orthogonal", 2, 8, 1)]
    for c in whole_cell + half_cell:
        store.path(c.id).unlink()
    plots.figure1(grid, store.load_grid(grid), tmp_path / "f1")
    (fig,) = drawn_figures
    hatched = {}
    for ax in fig.axes:
        for p in ax.patches:
            if p.get_hatch():
                x, y = p.get_xy()
                cell = (ax.get_title().split()[0].lower(), round(10 ** (y + p.get_height() / 2)),
                        round(10 ** (x + p.get_width() / 2)))
                hatched[cell] = p.get_facecolor()[3]  # opaque white: no seed has a value
    assert hatched == {("gaussian", 4, 16): 1.0, ("orthogonal", 2, 8): 0.0}
    assert "missing record (3 configurations)" in _legend_texts(fig)
    assert "3 of 24 configurations have no record" in fig.get_suptitle()

    plots.figure1(grid, make_store(tmp_path / "whole", grid).load_grid(grid), tmp_path / "f1")
    whole = drawn_figures[-1]
    assert not [p for ax in whole.axes for p in ax.patches if p.get_hatch()]
    assert not any("missing" in t for t in _legend_texts(whole)) and "no record" not in whole.get_suptitle()


def test_figure2_circles_and_names_missing_curves(tmp_path, drawn_figures):
    grid = Grid(depths=(2, 4, 8), widths=(4, 8), seeds=(0,), steps=STEPS)
    store = make_store(tmp_path, grid)
    gone = next(c for c in grid.configs() if (c.init, c.depth, c.width) == ("orthogonal", 4, 8))
    store.path(gone.id).unlink()
    plots.figure2(grid, store.load_grid(grid), tmp_path / "f2")
    (fig,) = drawn_figures
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title().startswith("depth")}
    circles = {title: [ln for ln in ax.lines if ln.get_marker() == "o"] for title, ax in panels.items()}
    assert [len(v) for v in circles.values()] == [0, 1, 0]
    assert list(circles["depth L = 4"][0].get_xydata()[0]) == [1.0, 1.0]
    texts = [t.get_text() for t in panels["depth L = 4"].texts]
    assert texts == ["missing record:\northogonal m=8 seed 0"]
    assert "missing record (1 curves)" in _legend_texts(fig)


def test_heatmap_values():
    table = {("gaussian", 2, 4): 1e-3, ("gaussian", 2, 8): math.inf, ("gaussian", 4, 8): 0.0,
             ("orthogonal", 2, 4): 0.5}
    Z, missing = plots.heatmap_values(table, "gaussian", [2, 4], [4, 8])
    assert Z[0, 0] == pytest.approx(-3.0)
    assert np.isnan(Z[0, 1]) and not missing[0, 1]  # diverged: drawn grey
    assert Z[1, 1] < plots.LOG_REL_FLOOR  # exact fit: below the colour range
    assert missing.tolist() == [[False, False], [True, False]]


def test_figure2_depths_default_to_spread_of_grid(grid):
    assert plots.figure2_depths(grid) == [2, 8, 32]
    assert plots.figure2_depths(grid.replace(figure2_depths=(4, 16))) == [4, 16]


def test_figure2_thins_many_widths_evenly():
    widths = list(range(10, 160, 10))
    picked = plots.figure2_widths(widths, most=6)
    assert picked[0] == 10 and picked[-1] == 150 and len(picked) == 6
    assert plots.figure2_widths([4, 8, 16], most=6) == [4, 8, 16]


def test_plot_store_refuses_a_directory_that_is_not_a_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a fastlin result store"):
        plots.plot_store(tmp_path)


def test_plot_store_refuses_an_empty_store(tmp_path, grid):
    ResultStore(tmp_path).create().save_grid(grid)
    with pytest.raises(ValueError, match="no finished configuration"):
        plots.plot_store(tmp_path)


def test_plotting_does_not_change_the_pyplot_backend(tmp_path, grid, png_only):
    import matplotlib

    before = matplotlib.get_backend()
    make_store(tmp_path, grid)
    plots.plot_store(tmp_path, figures=("figure2",))
    assert matplotlib.get_backend() == before
    assert not (tmp_path / "figure1.png").exists()
    assert (tmp_path / "figure2.png").exists() and not (tmp_path / "figure2.pdf").exists()
