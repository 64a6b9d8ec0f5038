"""Result store and resumable sweeps: atomic writes, crashes, resume, --force, divergence."""

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastlin

from fastlin.experiments import (Executor, Grid, LRRule, ResultStore, RunFailure, run_config,
                                 run_sweep)
from fastlin.experiments import executors as executors_module
from fastlin.experiments.store import TMP_MARK, atomic_write_bytes


def tiny_grid(**changes):
    spec = dict(inits=("gaussian", "orthogonal"), depths=(1, 2, 3), widths=(4, 8), seeds=(0,),
                steps=30, dx=16, n=8, dy=4, lr=LRRule("theorem", 0.5), backend="numpy")
    spec.update(changes)
    return Grid(**spec)


def sweep(grid, out, **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("workers", 2)
    return run_sweep(grid, out, **kwargs)


def test_record_round_trip(tmp_path):
    config = tiny_grid().configs()[3]
    record = run_config(config)
    store = ResultStore(tmp_path).create()
    store.save(record)
    back = store.load(config.id)
    assert back.config == config and back.config.id == config.id
    assert back.loss.dtype == np.float64
    np.testing.assert_array_equal(back.loss, record.loss)
    assert (back.status, back.steps_run, back.lr) == (record.status, record.steps_run, record.lr)
    assert store.finished_ids() == {config.id}


def test_crash_during_write_leaves_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "result.bin"
    atomic_write_bytes(target, b"old complete contents")

    real_open = open

    class HalfWriter:
        """A file that writes half of what it is given, then the process 'dies'."""

        def __init__(self, *args, **kwargs):
            self.fh = real_open(*args, **kwargs)

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            raise KeyboardInterrupt("simulated crash mid-write")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr("builtins.open", HalfWriter)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new contents that never fully land" * 100)
    monkeypatch.undo()
    assert target.read_bytes() == b"old complete contents"
    assert [p.name for p in tmp_path.iterdir()] == ["result.bin"]


def test_torn_temporary_from_a_killed_writer_is_ignored_then_removed(tmp_path):
    grid = tiny_grid(inits=("gaussian",), depths=(2,), widths=(4, 8))
    configs = grid.configs()
    store = ResultStore(tmp_path).create()
    store.save(run_config(configs[0]))
    # What a kill -9 between write and rename leaves: a torn file under a
    # temporary name, owned by a process that no longer exists.
    good = store.path(configs[0].id).read_bytes()
    dead_pid = _dead_pid()
    torn = store.runs / f"{configs[1].id}.npz{TMP_MARK}{dead_pid}-deadbeef"
    torn.write_bytes(good[: len(good) // 3])
    assert store.finished_ids() == {configs[0].id}

    summary = sweep(grid, tmp_path)
    assert (summary.done, summary.skipped) == (1, 1)
    assert not torn.exists()
    assert {r.config.id for r in store.load_all()} == {c.id for c in configs}


def test_unreadable_result_file_is_rerun(tmp_path):
    grid = tiny_grid(inits=("gaussian",), depths=(2,), widths=(4,))
    sweep(grid, tmp_path)
    store = ResultStore(tmp_path)
    (config,) = grid.configs()
    store.path(config.id).write_bytes(b"not an npz file")
    with pytest.warns(UserWarning, match="unreadable"):
        assert store.load(config.id) is None


def test_kill_9_while_writing_leaves_only_complete_files(tmp_path):
    """A writer saving records in a loop is killed with SIGKILL; every file left must load."""
    script = textwrap.dedent(f"""
        import itertools
        from fastlin.experiments import Config, ResultStore, run_config
        store = ResultStore({str(tmp_path)!r}).create()
        configs = [Config(init="gaussian", depth=2, width=w, seed=0, steps=2000, dx=16, n=8, dy=4)
                   for w in (4, 5, 6)]
        records = [run_config(c) for c in configs]
        print("ready", flush=True)
        for k in itertools.count():
            store.save(records[k % 3])
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    store = ResultStore(tmp_path)
    finished = store.finished_ids()
    assert finished  # it did save before dying
    for config_id in finished:
        record = store.load(config_id)
        assert record is not None and len(record.loss) == 2001 and record.config.id == config_id
    assert store.remove_stale_temporaries() >= 0
    assert not [p for p in store.runs.iterdir() if TMP_MARK in p.name]


def test_rerun_skips_finished_and_force_recomputes(tmp_path):
    grid = tiny_grid()
    n = len(grid.configs())
    first = sweep(grid, tmp_path)
    assert (first.done, first.skipped, first.failed) == (n, 0, 0)
    store = ResultStore(tmp_path)
    stamps = {p.name: p.stat().st_mtime_ns for p in store.runs.iterdir()}

    again = sweep(grid, tmp_path)
    assert (again.done, again.skipped) == (0, n)
    assert {p.name: p.stat().st_mtime_ns for p in store.runs.iterdir()} == stamps

    victim = grid.configs()[4]
    store.path(victim.id).unlink()
    resumed = sweep(grid, tmp_path)
    assert (resumed.done, resumed.skipped) == (1, n - 1)
    assert store.has(victim.id)

    forced = sweep(grid, tmp_path, force=True)
    assert (forced.done, forced.skipped) == (n, 0)
    assert all(p.stat().st_mtime_ns != stamps[p.name] for p in store.runs.iterdir()
               if p.name != f"{victim.id}.npz")


def test_threads_give_the_same_numbers_as_a_direct_run(tmp_path):
    grid = tiny_grid()
    sweep(grid, tmp_path, executor="threads", workers=2)
    store = ResultStore(tmp_path)
    for config in grid.configs():
        np.testing.assert_array_equal(store.load(config.id).loss, run_config(config).loss)


def test_diverged_configurations_are_recorded_and_the_sweep_goes_on(tmp_path):
    grid = tiny_grid(lr=LRRule("fixed", 1e6), inits=("gaussian",))
    summary = sweep(grid, tmp_path)
    n = len(grid.configs())
    assert summary.done == n and summary.diverged == n
    for record in ResultStore(tmp_path).load_all():
        assert record.status == "diverged"
        assert np.isnan(record.loss[-1]) and record.steps_run < grid.steps


def test_a_failing_configuration_is_reported_not_stored_and_retried(tmp_path, monkeypatch):
    grid = tiny_grid(inits=("gaussian",))
    bad = grid.configs()[2]
    real = executors_module.run_config_safely

    def flaky(config, kernel_threads=None):
        if config.id == bad.id:
            return RunFailure(config, "RuntimeError: out of luck")
        return real(config, kernel_threads)

    monkeypatch.setattr(executors_module, "run_config_safely", flaky)
    summary = sweep(grid, tmp_path)
    assert summary.failed == 1 and summary.done == len(grid.configs()) - 1
    assert summary.failures[0].config.id == bad.id
    assert not ResultStore(tmp_path).has(bad.id)
    monkeypatch.undo()
    retry = sweep(grid, tmp_path)
    assert (retry.done, retry.failed) == (1, 0)


class InterruptedExecutor(Executor):
    """Finishes two configurations, then the user presses Ctrl-C."""

    name = "interrupted"

    def run(self, configs):
        for config in configs[:2]:
            yield run_config(config)
        raise KeyboardInterrupt


def test_an_interrupted_sweep_keeps_what_finished(tmp_path):
    grid = tiny_grid()
    with pytest.raises(KeyboardInterrupt):
        sweep(grid, tmp_path, executor=InterruptedExecutor(workers=1))
    assert len(ResultStore(tmp_path).finished_ids()) == 2
    rest = sweep(grid, tmp_path)
    assert (rest.done, rest.skipped) == (len(grid.configs()) - 2, 2)


def test_tidy_table(tmp_path):
    grid = tiny_grid(readout_steps=(7, 30))
    sweep(grid, tmp_path)
    with open(tmp_path / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    ids = {c.id for c in grid.configs()}
    assert {r["config_id"] for r in rows} == ids
    steps = sorted({int(r["step"]) for r in rows})
    assert steps == [0, 1, 2, 5, 7, 10, 20, 30]
    assert len(rows) == len(ids) * len(steps)
    store = ResultStore(tmp_path)
    for row in rows:
        if row["status"] == "diverged":
            continue
        record = store.load(row["config_id"])
        assert float(row["relative_loss"]) == pytest.approx(record.relative_loss[int(row["step"])],
                                                            rel=1e-15)
    assert all(float(r["relative_loss"]) == 1.0 for r in rows if r["step"] == "0")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    try:
        os.kill(proc.pid, 0)
    except ProcessLookupError:
        return proc.pid
    pytest.skip("could not find a dead pid")


def test_sweep_prepares_the_cpu_kernels_once_per_dtype_and_says_so(tmp_path, monkeypatch):
    from fastlin.experiments import runner as runner_module

    calls = []

    def fake_prepare(backend, dtype):
        calls.append((backend, dtype))
        return 0.25

    monkeypatch.setattr(runner_module, "prepare", fake_prepare)
    log = tmp_path / "log.txt"
    with open(log, "w") as stream:
        sweep(tiny_grid(backend="cpu", steps=3), tmp_path / "a", workers=2, progress=True, stream=stream)
    assert calls == [("cpu", "float64")]
    assert "preparing the CPU kernel (float64" in log.read_text() and "ready in 0.2 s" in log.read_text()
    calls.clear()
    sweep(tiny_grid(backend="cpu", steps=3), tmp_path / "a")  # nothing left to run
    sweep(tiny_grid(backend="numpy", steps=3), tmp_path / "b")  # no CPU kernels
    assert calls == []


def test_remote_workers_compile_for_themselves(tmp_path, monkeypatch):
    from fastlin.experiments import runner as runner_module

    monkeypatch.setattr(runner_module, "prepare", lambda *a, **k: pytest.fail("prepared for remote workers"))

    class Remote(Executor):
        name = "remote-test"

        def run(self, configs):
            for config in configs:
                yield run_config(config)

    summary = sweep(tiny_grid(backend="cpu", steps=3), tmp_path, executor=Remote(1))
    assert summary.done == len(tiny_grid().configs())


def test_prepare_compiles_the_one_kernel_of_a_dtype():
    from fastlin.kernels.cpu import passes

    assert fastlin.prepare("cpu", "float32") > 0
    assert any("float32" in str(sig) for sig in passes.run_chunk.signatures)
    with pytest.raises(TypeError, match="dtype"):
        fastlin.prepare("cpu", "int8")
    with pytest.raises(ValueError, match="unknown backend"):
        fastlin.prepare("gpu")
