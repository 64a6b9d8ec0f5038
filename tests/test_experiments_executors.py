"""Executors: threads, processes and a Dask LocalCluster give identical results; the registry."""

import os
import signal
import threading
import time

import numpy as np
import pytest

from fastlin.experiments import (EXECUTORS, Executor, Grid, LRRule, ResultStore, make_executor,
                                 register_executor, run_config, run_sweep)


def tiny_grid():
    return Grid(inits=("gaussian", "orthogonal"), depths=(1, 3), widths=(4, 6), seeds=(0, 1),
                steps=25, dx=12, n=6, dy=3, lr=LRRule("theorem", 0.5), backend="numpy")


def losses(out, grid):
    store = ResultStore(out)
    return {c.id: store.load(c.id).loss for c in grid.configs()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_processes_match_threads(tmp_path):
    grid = tiny_grid()
    run_sweep(grid, tmp_path / "threads", executor="threads", workers=2, progress=False)
    summary = run_sweep(grid, tmp_path / "processes", executor="processes", workers=2,
                        progress=False)
    assert summary.done == len(grid.configs())
    assert_same(losses(tmp_path / "threads", grid), losses(tmp_path / "processes", grid))


def test_dask_local_cluster_matches_threads(tmp_path):
    pytest.importorskip("distributed")
    grid = tiny_grid()
    run_sweep(grid, tmp_path / "threads", executor="threads", workers=2, progress=False)
    summary = run_sweep(grid, tmp_path / "dask", executor="dask", workers=2, progress=False)
    assert (summary.done, summary.failed) == (len(grid.configs()), 0)
    assert_same(losses(tmp_path / "threads", grid), losses(tmp_path / "dask", grid))
    records = ResultStore(tmp_path / "dask").load_all()
    assert all(r.host for r in records)


def test_unknown_executor_and_misplaced_scheduler():
    with pytest.raises(ValueError, match="unknown executor 'mpi'.*threads"):
        make_executor("mpi")
    with pytest.raises(ValueError, match="only used by the dask executor"):
        make_executor("threads", scheduler="tcp://localhost:8786")
    with pytest.raises(ValueError, match="workers"):
        make_executor("threads", workers=0)


class BatchedExecutor(Executor):
    """Stands for a GPU executor: it sees the whole list and works in slices of equal shape."""

    name = "batched-test"
    slices = []

    def run(self, configs):
        shapes = {}
        for c in configs:
            shapes.setdefault((c.depth, c.width), []).append(c)
        for group in shapes.values():
            BatchedExecutor.slices.append(len(group))
            yield from (run_config(c) for c in group)


def test_registered_batched_executor_receives_whole_slices(tmp_path, monkeypatch):
    monkeypatch.setitem(EXECUTORS, "batched-test", BatchedExecutor)
    BatchedExecutor.slices = []
    grid = tiny_grid()
    summary = run_sweep(grid, tmp_path, executor="batched-test", progress=False)
    assert summary.done == len(grid.configs())
    # 2 inits x 2 seeds share each (depth, width) shape
    assert BatchedExecutor.slices == [4, 4, 4, 4]
    register_executor("batched-test", BatchedExecutor)
    assert make_executor("batched-test", workers=1).name == "batched-test"


def test_gpu_batch_executor_slices_and_results(tmp_path):
    """The batched executor's grouping and records, run through train_batch's loop on the CPU.

    On "cuda" the same slices go to one kernel launch each (tested in
    test_cuda_kernel.py against per-configuration training).
    """
    from fastlin.experiments.executors import BatchExecutor

    grid = tiny_grid()
    executor = BatchExecutor(backend="numpy", batch_size=5, max_batch_weights=30)
    configs = grid.configs()
    parts = executor.slices(configs)
    assert sorted(c.id for part in parts for c in part) == sorted(c.id for c in configs)
    for part in parts:
        assert len(part) <= 5
        assert len({(c.data_seed, c.dx, c.n, c.dy, c.dtype, c.steps) for c in part}) == 1
        if len(part) > 1:  # only nets whose largest layer is below 30 weights share a launch
            assert all(max(c.dims[i] * c.dims[i - 1] for i in range(1, len(c.dims))) < 30 for c in part)
    run_sweep(grid, tmp_path / "threads", executor="threads", workers=2, progress=False)
    summary = run_sweep(grid, tmp_path / "gpu", executor=executor, progress=False)
    assert (summary.done, summary.failed) == (len(configs), 0)
    assert_same(losses(tmp_path / "threads", grid), losses(tmp_path / "gpu", grid))


def test_gpu_batch_executor_needs_its_backend():
    from fastlin.experiments.executors import BatchExecutor

    assert EXECUTORS["gpu"] is BatchExecutor
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        BatchExecutor(backend="tpu")


def test_dask_sweep_survives_a_worker_killed_while_it_runs_a_task(tmp_path):
    """kill -9 of a LocalCluster worker process in the middle of a configuration: the sweep completes, whole."""
    pytest.importorskip("distributed")
    from fastlin.experiments.check import check_directory
    from fastlin.experiments.executors import DaskExecutor

    # About half a second per configuration (NumPy backend, no compile), so tasks are running when the kill comes.
    grid = Grid(inits=("gaussian", "orthogonal"), depths=(2, 3), widths=(4, 6), seeds=(0,), steps=20_000,
                dx=12, n=6, dy=3, lr=LRRule("theorem", 0.5), backend="numpy")
    executor = DaskExecutor(workers=2)
    killed = {}

    def executing(dask_worker):
        return os.getpid(), len(dask_worker.state.executing)

    def kill_a_busy_worker():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            client = executor._client
            try:
                busy = [pid for pid, running in client.run(executing).values() if running] if client else []
            except Exception:  # noqa: BLE001 - the cluster is still starting
                busy = []
            if busy:
                os.kill(busy[0], signal.SIGKILL)
                killed["pid"] = busy[0]
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    killer.start()
    summary = run_sweep(grid, tmp_path / "dask", executor=executor, progress=False)
    killer.join(timeout=5)
    assert killed, "no worker was seen running a task"
    assert (summary.done, summary.failed) == (len(grid.configs()), 0), summary.failures
    assert check_directory(tmp_path / "dask").whole
    expected = {c.id: run_config(c).loss for c in grid.configs()}
    assert_same(losses(tmp_path / "dask", grid), expected)
