"""Grids: stable configuration ids, learning-rate rules, TOML grid files and their errors."""

import dataclasses

import numpy as np
import pytest

import fastlin
from fastlin.experiments import Config, Grid, GridError, LRRule, log_spaced_ints

REFERENCE = Config(init="orthogonal", depth=8, width=16, seed=3, steps=100,
                   lr=LRRule("theorem", 0.5), dtype="float64", data_seed=0)


def test_config_id_is_a_stable_golden_value():
    # A change of this value silently orphans every stored result: only change
    # it on purpose (and say so in the changelog).
    assert REFERENCE.id == "c47b2822d46cb2d3"
    assert Config.from_dict(REFERENCE.to_dict()).id == REFERENCE.id


@pytest.mark.parametrize("change", [
    {"init": "gaussian"}, {"depth": 9}, {"width": 17}, {"seed": 4}, {"steps": 101},
    {"lr": LRRule("theorem", 0.25)}, {"lr": LRRule("fixed", 0.5)}, {"dtype": "float32"},
    {"data_seed": 1}, {"dx": 512}, {"n": 8}, {"dy": 5}, {"rtol_stop": 1e-9},
])
def test_every_result_field_changes_the_id(change):
    assert dataclasses.replace(REFERENCE, **change).id != REFERENCE.id


def test_backend_is_recorded_but_not_part_of_the_id():
    on_cpu = dataclasses.replace(REFERENCE, backend="cpu")
    assert on_cpu.id == REFERENCE.id
    assert on_cpu.to_dict()["backend"] == "cpu"


def test_grid_is_the_product_of_its_axes():
    grid = Grid(inits=("gaussian", "orthogonal"), depths=(2, 4, 8), widths=(16, 32), seeds=(0, 1),
                steps=10)
    configs = grid.configs()
    assert len(configs) == 2 * 3 * 2 * 2
    assert len({c.id for c in configs}) == len(configs)
    assert {(c.init, c.depth, c.width, c.seed) for c in configs} == {
        (i, L, m, s) for i in grid.inits for L in grid.depths for m in grid.widths for s in grid.seeds}


def test_lr_rules():
    X, _ = fastlin.paper_data(rng=0, dx=64, n=8, dy=4)
    assert LRRule("fixed", 3e-4).learning_rate(X, 10, 4) == 3e-4
    expected = 0.5 * 4 / (2 * 10 * np.linalg.norm(X, 2) ** 2)
    assert LRRule("theorem", 0.5).learning_rate(X, 10, 4) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(GridError, match="lr rule"):
        LRRule("adam", 1.0)
    with pytest.raises(GridError, match="lr value"):
        LRRule("fixed", 0.0)


def test_default_readout_steps_follow_the_paper():
    assert Grid(steps=10_000).readout_steps == (1258, 10_000)
    assert Grid(steps=1000).readout_steps == (125, 1000)


def test_log_spaced_ints():
    values = log_spaced_ints(10, 1000, 13)
    assert values[0] == 10 and values[-1] == 1000 and len(values) == 13
    assert values == sorted(values)


GOOD_TOML = """
inits = ["gaussian"]
depths = {start = 2, stop = 32, num = 5}
widths = [16, 32]
seeds = [0, 1]
steps = 200
backend = "numpy"
rtol_stop = 1e-12
[lr]
rule = "fixed"
value = 1e-4
[data]
seed = 3
dx = 64
[analysis]
readout_steps = [20, 200]
threshold = 0.05
"""


def test_toml_grid_file(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text(GOOD_TOML)
    grid = Grid.from_toml(path)
    assert grid.inits == ("gaussian",)
    assert grid.depths == (2, 4, 8, 16, 32)
    assert grid.lr == LRRule("fixed", 1e-4)
    assert (grid.data_seed, grid.dx, grid.n, grid.dy) == (3, 64, 16, 10)
    assert grid.readout_steps == (20, 200) and grid.threshold == 0.05
    assert grid.rtol_stop == 1e-12
    assert Grid.from_dict(grid.to_dict()) == grid


@pytest.mark.parametrize("text, message", [
    ("depths = [1]\nwidths = [2]\n", "missing required key.*steps"),
    ("depths = [1]\nwidths = [2]\nsteps = 5\ncolour = 1\n", "unknown key.*colour"),
    ("depths = [1]\nwidths = [2]\nsteps = 5\ninits = ['xavier']\n", "unknown init 'xavier'"),
    ("depths = [0]\nwidths = [2]\nsteps = 5\n", "depths must be integers >= 1"),
    ("depths = [1, 1]\nwidths = [2]\nsteps = 5\n", "duplicates"),
    ("depths = []\nwidths = [2]\nsteps = 5\n", "depths must be a non-empty list"),
    ("depths = 4\nwidths = [2]\nsteps = 5\n", "depths must be a list"),
    ("depths = [1]\nwidths = [2.5]\nsteps = 5\n", "widths must be integers"),
    ("depths = [1]\nwidths = [2]\nsteps = 5\nbackend = 'tpu'\n", "backend must be one of"),
    ("depths = [1]\nwidths = [2]\nsteps = 5\ndtype = 'float16'\n", "dtype must be"),
    ("depths = [1]\nwidths = [2]\nsteps = 5\n[lr]\nrule = 'magic'\n", r"\[lr\].*lr rule"),
    ("depths = [1]\nwidths = [2]\nsteps = 5\n[lr]\nvalue = -1\n", "lr value"),
    ("depths = [1]\nwidths = [2]\nsteps = 5\n[lr]\nrate = 1\n", r"\[lr\] has unknown key"),
    ("depths = [1]\nwidths = [2]\nsteps = 5\n[analysis]\nreadout_steps = [9]\n", "readout_steps"),
    ("depths = [1]\nwidths = [2]\nsteps = 5\n[analysis]\nthreshold = 2\n", "threshold"),
    ("depths = {start = 1, stop = 10}\nwidths = [2]\nsteps = 5\n", "start, stop, num"),
    ("depths = [1\nwidths = [2]\n", "not valid TOML"),
])
def test_bad_grid_files_give_clear_errors(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(GridError, match=message) as info:
        Grid.from_toml(path)
    assert str(path) in str(info.value)


def test_missing_grid_file(tmp_path):
    with pytest.raises(GridError, match="cannot read grid file"):
        Grid.from_toml(tmp_path / "nope.toml")


def test_step_weights_count_what_the_backend_sweeps():
    rng = np.random.default_rng()
    L, m = int(rng.integers(1, 9)), int(rng.integers(2, 60))
    dx, dy = int(rng.integers(2, 300)), int(rng.integers(1, 12))
    base = dict(init="orthogonal", depth=L, width=m, seed=0, steps=5, dx=dx, dy=dy)
    numpy_cfg, cpu_cfg = Config(backend="numpy", **base), Config(backend="cpu", **base)
    cuda_cfg = Config(backend="cuda", **base)
    dims = fastlin.network_dims(L, m, dx, dy)
    every = sum(dims[i] * dims[i - 1] for i in range(1, L + 1))
    assert numpy_cfg.parameters == cpu_cfg.parameters == numpy_cfg.step_weights == every
    # the cpu and cuda kernels step V_1 through Z
    assert cpu_cfg.step_weights == cuda_cfg.step_weights == every - dims[0] * dims[1]
