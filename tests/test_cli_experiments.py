"""`fastlin train`, `fastlin sweep`, `fastlin plot` and `fastlin reproduce` on tiny inputs."""

import json

import numpy as np

import pytest

from fastlin.cli import main

TINY = """
inits = ["gaussian", "orthogonal"]
depths = [1, 2, 4]
widths = [4, 8]
steps = 40
backend = "numpy"
[lr]
rule = "theorem"
value = 0.5
[data]
dx = 16
n = 8
dy = 4
[analysis]
readout_steps = [10, 40]
threshold = 0.1
"""


@pytest.fixture
def grid_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_sweep_then_rerun_then_plot(tmp_path, grid_file, capsys, monkeypatch):
    monkeypatch.setattr("fastlin.plots.FORMATS", ("png",))
    out = tmp_path / "store"
    assert main(["sweep", str(grid_file), "--out", str(out), "--workers", "2"]) == 0
    printed = capsys.readouterr()
    assert "12 configurations: 12 done, 0 skipped" in printed.out
    assert "slope s =" in printed.out
    assert (out / "figure1.png").is_file() and (out / "figure2.png").is_file()
    assert (out / "results.csv").is_file()
    summary = json.loads((out / "figure1_summary.json").read_text())
    assert summary["step"] == 40 and summary["threshold"] == 0.1
    assert set(summary["slope"]) == {"gaussian", "orthogonal"}

    (out / "figure1.png").unlink()
    assert main(["sweep", str(grid_file), "--out", str(out), "--quiet"]) == 0
    assert "12 configurations: 0 done, 12 skipped" in capsys.readouterr().out

    (out / "figure1.png").unlink()
    assert main(["plot", str(out), "--figure", "figure1"]) == 0
    assert (out / "figure1.png").is_file()
    assert "figure1_summary.json" in capsys.readouterr().out


def test_bad_grid_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("depths = [1, 2]\nwidths = ['wide']\nsteps = 10\n")
    assert main(["sweep", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "fastlin: error:" in err and "widths must be integers" in err and "bad.toml" in err
    assert not (tmp_path / "o").exists()


def test_plot_of_a_directory_that_is_not_a_store(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "not a fastlin result store" in capsys.readouterr().err


def test_scheduler_needs_dask(tmp_path, grid_file, capsys):
    code = main(["sweep", str(grid_file), "--out", str(tmp_path / "o"),
                 "--scheduler", "tcp://127.0.0.1:1"])
    assert code == 2
    assert "--scheduler needs --executor dask" in capsys.readouterr().err


def test_reproduce_paper_preset_prints_an_estimate_before_starting(tmp_path, capsys, monkeypatch):
    calls = []

    def fake_estimate(grid, *, workers, progress):
        calls.append((grid, workers))
        return {"seconds": 5400.0, "configurations": len(grid.configs()), "workers": workers,
                "backend": grid.backend,
                "probes": [{"depth": 16, "width": 1000, "seconds_per_step": 0.002}]}

    monkeypatch.setattr("fastlin.experiments.estimate_sweep_seconds", fake_estimate)
    code = main(["reproduce", "figure1", "--preset", "paper", "--backend", "numpy",
                 "--estimate-only", "--workers", "3", "--out", str(tmp_path / "paper")])
    assert code == 0
    out = capsys.readouterr().out
    assert "338 configurations" in out and "10000 steps" in out
    assert "estimated run time: 1 h 30 min with 3 worker(s)" in out and "2 ms/step" in out
    grid, workers = calls[0]
    assert workers == 3 and grid.steps == 10_000 and len(grid.depths) == 13
    assert not (tmp_path / "paper").exists()


def test_estimate_sums_the_measured_rates_over_the_grid(monkeypatch):
    from fastlin.experiments import Grid, estimate_sweep_seconds, runner

    measured = {(8, 64): 0.01, (8, 8): 0.002}  # (L, m) -> seconds per step
    monkeypatch.setattr(runner, "_seconds_per_step", lambda c, s: measured[c.depth, c.width])
    grid = Grid(depths=(2, 8), widths=(8, 64), steps=1000, dx=32, n=8, dy=4, backend="numpy")
    est = estimate_sweep_seconds(grid, workers=2)
    wide = 64 * 32 + 6 * 64 * 64 + 4 * 64  # d = [32, 64 x 7, 4]
    narrow = 8 * 32 + 6 * 8 * 8 + 4 * 8
    a = 0.01 / wide
    b = (0.002 - a * narrow) / 8
    expected = sum(1000 * (a * c.parameters + b * c.depth) for c in grid.configs()) / 2
    assert est["seconds"] == pytest.approx(expected, rel=1e-12)
    assert [(p["depth"], p["width"]) for p in est["probes"]] == [(8, 64), (8, 8)]


def test_step_rate_is_measured():
    from fastlin.experiments import Config, runner

    config = Config(init="orthogonal", depth=3, width=8, seed=0, steps=10, dx=16, n=4, dy=2)
    rate = runner._seconds_per_step(config, 0.01)
    assert 0 < rate < 0.1


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_train_prints_the_relative_loss_of_the_net_it_trained(capsys, backend):
    import fastlin

    assert main(["train", "--depth", "3", "--width", "12", "--init", "gaussian", "--steps", "20",
                 "--seed", "3", "--backend", backend]) == 0
    out, err = capsys.readouterr()
    rows = dict(line.split() for line in out.splitlines() if line.strip()[:1].isdigit())
    X, Y = fastlin.paper_data(rng=0)
    W = fastlin.init_weights(fastlin.network_dims(3, 12, 1024, 10), "gaussian", rng=3)
    lr, lam_max = fastlin.ntk.auto_lr(W, X)
    assert f"lr = 0.5 / λ_max(Θ(0)) = {lr:.4g}" in out and f"{2 / lam_max:.4g}" in out
    expected = fastlin.train(W, X, Y, lr=lr, steps=20, backend="numpy").relative_loss
    assert set(rows) == {"1", "2", "5", "10", "20"}
    for t, rel in rows.items():
        assert float(rel) == pytest.approx(expected[int(t)], rel=1e-6)
    assert ("preparing the CPU kernel (float64" in err) == (backend == "cpu")


def test_the_estimate_prepares_the_cpu_kernels_of_its_probes_first(monkeypatch, capsys, tmp_path):
    from fastlin.experiments import runner

    order = []
    monkeypatch.setattr(runner, "prepare", lambda *a: order.append(("prepare",) + a) or 0.5)
    real_estimate = runner.estimate_sweep_seconds

    def fake_estimate(grid, *, workers, progress):
        monkeypatch.setattr(runner, "_seconds_per_step", lambda config, probe: order.append("probe") or 1e-3)
        real_estimate(grid, workers=workers, progress=progress)
        order.append(("estimate", workers))
        return {"seconds": 60.0, "configurations": 1, "workers": workers, "backend": grid.backend,
                "probes": [{"depth": 16, "width": 1000, "seconds_per_step": 0.002}]}

    monkeypatch.setattr("fastlin.experiments.estimate_sweep_seconds", fake_estimate)
    assert main(["reproduce", "figure1", "--preset", "paper", "--backend", "cpu", "--estimate-only",
                 "--workers", "1", "--out", str(tmp_path / "paper")]) == 0
    assert order == [("prepare", "cpu", "float64"), "probe", "probe", ("estimate", 1)]
    assert "preparing the CPU kernel (float64" in capsys.readouterr().err


def test_train_takes_an_explicit_rate_or_a_scale_of_the_auto_rate(capsys):
    import fastlin

    X, _ = fastlin.paper_data(rng=0)
    W = fastlin.init_weights(fastlin.network_dims(4, 16, 1024, 10), "orthogonal", rng=0)
    assert main(["train", "--depth", "4", "--width", "16", "--init", "orthogonal", "--steps", "3",
                 "--backend", "numpy", "--lr-scale", "0.25"]) == 0
    out = capsys.readouterr().out
    assert f"lr={fastlin.ntk.auto_lr(W, X, 0.25)[0]:.4g}" in out
    assert main(["train", "--depth", "4", "--width", "16", "--init", "orthogonal", "--steps", "3",
                 "--backend", "numpy", "--lr", "1e-4"]) == 0
    out = capsys.readouterr().out
    assert "λ_max" not in out and "lr=0.0001" in out
    assert main(["train", "--depth", "4", "--width", "16", "--init", "orthogonal", "--steps", "3",
                 "--backend", "numpy", "--lr-scale", "2.5"]) == 2
    assert "scale must be a number in (0, 2)" in capsys.readouterr().err


@pytest.fixture
def png_only(monkeypatch):
    monkeypatch.setattr("fastlin.plots.FORMATS", ("png",))


def _store(tmp_path, grid_file, capsys):
    out = tmp_path / "store"
    assert main(["sweep", str(grid_file), "--out", str(out), "--workers", "2", "--quiet"]) == 0
    capsys.readouterr()
    from fastlin.experiments import Grid, ResultStore

    return out, ResultStore(out), Grid.from_toml(grid_file).configs()


DAMAGES = {
    "truncated": lambda store, c, other: store.path(c.id).write_bytes(store.path(c.id).read_bytes()[:100]),
    "zero-byte": lambda store, c, other: store.path(c.id).write_bytes(b""),
    "random-bytes": lambda store, c, other: store.path(c.id).write_bytes(bytes(range(256)) * 8),
    "other-config": lambda store, c, other: store.path(c.id).write_bytes(store.path(other.id).read_bytes()),
    "missing": lambda store, c, other: store.path(c.id).unlink(),
}
REPORTED = {"truncated": "damaged .* unreadable: BadZipFile", "zero-byte": "damaged .* unreadable: EOFError",
            "random-bytes": "damaged .* unreadable", "other-config": "damaged .* mismatch: holds configuration",
            "missing": "missing .* no record file"}


@pytest.mark.parametrize("damage", DAMAGES)
def test_check_is_0_on_a_whole_store_and_names_each_damaged_file(tmp_path, grid_file, capsys, damage, png_only):
    import re

    out, store, configs = _store(tmp_path, grid_file, capsys)
    assert main(["check", str(out)]) == 0
    assert "whole: 12 of 12 configurations have a whole record" in capsys.readouterr().out
    victim = configs[3]
    DAMAGES[damage](store, victim, configs[0])
    assert main(["check", str(out)]) == 1
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if f"runs/{victim.id}.npz" in line)
    assert re.match(REPORTED[damage], row), row
    assert f"{victim.init} L={victim.depth} m={victim.width} seed={victim.seed}" in row
    assert "NOT whole: 11 of 12 configurations" in printed
    # check reads only; the next sweep moves the file aside, recomputes it, and the store is whole again
    assert main(["sweep", str(grid_file), "--out", str(out), "--quiet"]) == 0
    assert ("1 damaged, rerun" in capsys.readouterr().out) == (damage != "missing")
    assert main(["check", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "whole: 12 of 12" in printed
    assert ("1 damaged file(s) kept aside in runs/damaged/" in printed) == (damage != "missing")


def test_check_finds_records_that_load_but_are_wrong(tmp_path, grid_file, capsys, png_only):
    import dataclasses

    import numpy as np

    out, store, configs = _store(tmp_path, grid_file, capsys)
    record = store.read(configs[5].id)
    store.save(dataclasses.replace(record, loss=record.loss[:-1]))
    nan = record.loss.copy()
    nan[7] = np.nan
    record_b = store.read(configs[6].id)
    assert record_b.status == "completed"
    store.save(dataclasses.replace(record_b, loss=nan))
    assert main(["check", str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"runs/{configs[5].id}.npz" in printed and "loss history is float64 of shape (40,)" in printed
    assert f"runs/{configs[6].id}.npz" in printed and "not finite: status 'completed' but loss(7) = nan" in printed


def test_check_of_a_directory_that_is_neither(tmp_path, capsys):
    assert main(["check", str(tmp_path)]) == 2
    assert "neither a fastlin result store (no sweep.json) nor a study (no study.json)" in capsys.readouterr().err


def test_check_of_a_study(tmp_path, capsys):
    from fastlin.experiments import study as st

    study = st.register_study(st.Study(
        name="check-toy", description="", presets={"small": lambda: [{"x": x} for x in (1, 2)]},
        run=lambda c: {"y": np.arange(c["x"])}, summarize=lambda records: {}, plot=lambda records, out: []))
    st.run_study(study, "small", tmp_path, progress=False)
    assert main(["check", str(tmp_path)]) == 0
    assert "study check-toy, preset small (study.json), 2 configurations" in capsys.readouterr().out
    victim = st.StudyStore(tmp_path).path(st.config_id("check-toy", {"x": 2}))
    victim.write_bytes(victim.read_bytes()[:40])
    assert main(["check", str(tmp_path)]) == 1
    printed = capsys.readouterr().out
    assert f"damaged  records/{victim.name}" in printed and '{"x":2}' in printed


def test_plot_of_a_store_with_holes_names_them_and_records_them(tmp_path, grid_file, capsys, png_only):
    out, store, configs = _store(tmp_path, grid_file, capsys)
    removed, torn = configs[1], configs[8]
    store.path(removed.id).unlink()
    store.path(torn.id).write_bytes(b"\0" * 64)
    assert main(["plot", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "incomplete: 2 of 12 configurations have no whole record (1 damaged, 1 missing)" in printed
    assert f"gaussian L={removed.depth} m={removed.width} seed=0" in printed
    assert f"{torn.init} L={torn.depth} m={torn.width} seed=0 (damaged)" in printed
    assert 'figure1_summary.json lists them under "missing"' in printed
    summary = json.loads((out / "figure1_summary.json").read_text())
    assert summary["runs"]["expected"] == 12 and summary["runs"]["finished"] == 10
    assert [{k: m[k] for k in ("id", "init", "depth", "width", "seed", "problem")} for m in summary["missing"]] == [
        {"id": c.id, "init": c.init, "depth": c.depth, "width": c.width, "seed": c.seed, "problem": p}
        for c, p in ((removed, "missing"), (torn, "damaged"))]
    assert (out / "figure1.png").is_file() and (out / "figure2.png").is_file()

    # the same through reproduce/sweep: rerunning fills the holes and the summary says none is missing
    assert main(["sweep", str(grid_file), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "12 configurations: 2 done, 10 skipped, 0 diverged, 0 failed, 1 damaged, rerun" in printed
    assert "incomplete" not in printed
    assert json.loads((out / "figure1_summary.json").read_text())["missing"] == []
