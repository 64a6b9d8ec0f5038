"""Result store and resumable sweeps: atomic writes, crashes, resume, --force, divergence."""

import concurrent.futures as cf
import csv
import json
import dataclasses
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import fastlin

from fastlin.experiments import (Executor, Grid, LRRule, ResultStore, RunFailure, run_config,
                                 run_sweep)
from fastlin.experiments import executors as executors_module
from fastlin.experiments.integrity import DamagedRecord
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


DAMAGES = {  # what a full disk, a crashed copy, a bad sync or a wrong copy leave in runs/
    "truncated": lambda good, other: good[:100],
    "zero-byte": lambda good, other: b"",
    "random-bytes": lambda good, other: np.random.default_rng(7).bytes(len(good)),
    "other-config": lambda good, other: other,
}


def assert_same_records(store, reference, grid):
    """Every configuration of ``grid`` is whole in ``store`` and equal, bit for bit, to ``reference``'s."""
    inventory = store.grid_inventory(grid)
    assert inventory.complete, inventory.holes()
    for config in grid.configs():
        got, want = inventory.records[config.id], reference.read(config.id, config)
        assert got.loss.dtype == np.float64 and got.loss.tobytes() == want.loss.tobytes()
        assert (got.status, got.steps_run, got.lr) == (want.status, want.steps_run, want.lr)


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_result_file_is_moved_aside_reported_and_recomputed(tmp_path, damage, capsys):
    grid = tiny_grid(depths=(1, 2))
    sweep(grid, tmp_path / "clean")
    out = tmp_path / "store"
    sweep(grid, out)
    store = ResultStore(out)
    victim, other = grid.configs()[1], grid.configs()[2]
    bad = DAMAGES[damage](store.path(victim.id).read_bytes(), store.path(other.id).read_bytes())
    store.path(victim.id).write_bytes(bad)
    with pytest.warns(UserWarning, match=f"ignoring damaged result file .*{victim.id}"):
        assert store.load(victim.id) is None
    capsys.readouterr()

    summary = sweep(grid, out, progress=True)
    n = len(grid.configs())
    assert (summary.done, summary.skipped, summary.failed) == (1, n - 1, 0)
    assert [d.record_id for d in summary.damaged] == [victim.id]
    printed = capsys.readouterr()
    assert f"{n} configurations: 1 done, {n - 1} skipped, 0 diverged, 0 failed, 1 damaged, rerun in" in printed.out
    assert f"damaged: {store.path(victim.id)}" in printed.err
    kept = store.damaged_files()
    assert len(kept) == 1 and kept[0].read_bytes() == bad and kept[0].name.startswith(victim.id)
    reason = kept[0].with_name(kept[0].name + ".reason").read_text()
    assert reason.startswith("mismatch: holds configuration" if damage == "other-config" else "unreadable")
    assert_same_records(store, ResultStore(tmp_path / "clean"), grid)
    assert (sweep(grid, out).done, len(store.damaged_files())) == (0, 1)


def test_records_that_load_but_do_not_match_are_damaged(tmp_path):
    config = tiny_grid().configs()[0]
    record = run_config(config)
    store = ResultStore(tmp_path).create()
    cases = {
        "loss history is float64 of shape (12,), expected float64 of shape (31,)": dict(loss=record.loss[:12]),
        "status 'finished' is not one of": dict(status="finished"),
        "steps_run 31 is not in [0, 30]": dict(steps_run=31),
        "not finite: status 'completed' but loss(5) = nan": dict(loss=np.where(np.arange(31) == 5, np.nan,
                                                                                record.loss)),
    }
    for message, change in cases.items():
        store.save(dataclasses.replace(record, **change))
        with pytest.raises(DamagedRecord, match=re.escape(message)):
            store.read(config.id, config)
    other = dataclasses.replace(config, seed=5)
    store.save(dataclasses.replace(record, config=other))
    store.path(other.id).rename(store.path(config.id))
    with pytest.raises(DamagedRecord, match=f"holds configuration {other.id} .*, not {config.id}"):
        store.read(config.id)
    store.save(record)
    assert store.read(config.id, config).loss.tobytes() == record.loss.tobytes()


def test_damage_again_never_overwrites_what_was_kept(tmp_path):
    grid = tiny_grid(inits=("gaussian",), depths=(2,), widths=(4,))
    (config,) = grid.configs()
    store = ResultStore(tmp_path)
    sweep(grid, tmp_path)
    for k in range(3):
        store.path(config.id).write_bytes(b"damaged %d" % k)
        assert len(sweep(grid, tmp_path).damaged) == 1
    assert sorted(p.read_bytes() for p in store.damaged_files()) == [b"damaged 0", b"damaged 1", b"damaged 2"]


def test_quarantine_moves_a_file_once_and_never_a_whole_one(tmp_path):
    """Two processes may both find a file damaged: one moves it; a whole record is never moved."""
    grid = tiny_grid(inits=("gaussian",), depths=(2,), widths=(4,))
    (config,) = grid.configs()
    store = ResultStore(tmp_path)
    sweep(grid, tmp_path)
    good = store.path(config.id).read_bytes()
    assert store.quarantine(config.id, "claimed damaged", config) is None  # whole: left in place
    assert store.path(config.id).read_bytes() == good and store.damaged_files() == []

    store.path(config.id).write_bytes(b"torn")
    barrier = threading.Barrier(6)

    def race():
        barrier.wait()
        return store.quarantine(config.id, "torn", config)

    with cf.ThreadPoolExecutor(6) as pool:
        moved = [p for p in pool.map(lambda _: race(), range(6)) if p is not None]
    assert len(moved) == 1 and store.damaged_files() == moved and moved[0].read_bytes() == b"torn"
    assert not store.path(config.id).exists()


def test_temporaries_of_live_or_foreign_writers_are_left_alone(tmp_path):
    """A sweep started beside a running one must not delete the files the other is writing."""
    from fastlin.experiments import integrity

    store = ResultStore(tmp_path).create()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = integrity._host_tag()
        mine = store.runs / f"a.npz{TMP_MARK}{live.pid}-0123abcd@{host}"
        old_style = store.runs / f"b.npz{TMP_MARK}{live.pid}-0123abcd"
        foreign_young = store.runs / f"c.npz{TMP_MARK}{live.pid}-0123abcd@other-host"
        foreign_old = store.root / f"sweep.json{TMP_MARK}{_dead_pid()}-0123abcd@other-host"
        dead_here = store.runs / f"d.npz{TMP_MARK}{_dead_pid()}-0123abcd@{host}"
        for p in (mine, old_style, foreign_young, foreign_old, dead_here):
            p.write_bytes(b"partial")
        day = integrity.FOREIGN_TEMPORARY_SECONDS
        os.utime(foreign_old, (time.time() - day - 60,) * 2)
        os.utime(foreign_young, (time.time() - day + 600,) * 2)
        assert store.remove_stale_temporaries() == 2
        assert all(p.exists() for p in (mine, old_style, foreign_young))
        assert not foreign_old.exists() and not dead_here.exists()
    finally:
        live.kill()
        live.wait()
    assert store.remove_stale_temporaries() == 2  # its writer is gone now
    assert [p for p in store.runs.iterdir() if TMP_MARK in p.name] == [foreign_young]


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


CONCURRENT_SWEEP = textwrap.dedent("""
    import json, pathlib, sys, time
    from fastlin.experiments import Grid, LRRule, run_sweep
    out, me, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    grid = Grid.from_dict(spec)
    ready = pathlib.Path(out).parent
    (ready / f"ready-{me}").touch()
    deadline = time.time() + 120
    while len(list(ready.glob("ready-*"))) < 2 and time.time() < deadline:  # start together
        time.sleep(0.002)
    s = run_sweep(grid, out, workers=1, progress=False)
    print(json.dumps({"done": s.done, "skipped": s.skipped, "failed": s.failed, "damaged": len(s.damaged)}))
""")


def test_two_sweeps_into_one_store_at_once_lose_and_mix_nothing(tmp_path):
    """Two processes sweep the same grid into one store at once, racing to move the same damaged files."""
    from fastlin.experiments.check import check_directory

    grid = tiny_grid(depths=(2, 3), widths=(4, 8, 16), seeds=(0, 1), steps=1500)
    configs = grid.configs()
    sweep(grid, tmp_path / "clean")
    clean = ResultStore(tmp_path / "clean")
    out = tmp_path / "race" / "store"
    store = ResultStore(out).create()
    for config in configs[:8]:  # finished before: both skip them
        store.path(config.id).write_bytes(clean.path(config.id).read_bytes())
    damaged = {}
    for k, config in enumerate(configs[8:12]):  # both find them damaged; one moves each aside
        damaged[config.id] = clean.path(config.id).read_bytes()[: 50 + k]
        store.path(config.id).write_bytes(damaged[config.id])
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_SWEEP, str(out), str(k), json.dumps(grid.to_dict())],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(2)]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    assert all(r["failed"] == 0 and r["done"] + r["skipped"] == len(configs) for r in results)
    assert sum(r["damaged"] for r in results) == len(damaged)  # each reported by the one that moved it
    assert sum(r["done"] for r in results) >= len(configs) - 8  # started together: mostly both did all
    assert check_directory(out).whole
    assert_same_records(store, clean, grid)
    kept = store.damaged_files()
    assert sorted(p.read_bytes() for p in kept) == sorted(damaged.values())
    assert not [p for p in (out, store.runs) for p in p.iterdir() if TMP_MARK in p.name]
    with open(out / "results.csv", newline="") as fh:
        assert {row["config_id"] for row in csv.DictReader(fh)} == {c.id for c in configs}
    assert Grid.from_dict(json.loads((out / "sweep.json").read_text())) == grid
