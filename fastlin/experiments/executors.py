"""Executors: where the configurations of a sweep run.

An executor takes the whole list of pending configurations at once and
yields one :class:`~fastlin.experiments.store.RunRecord` (or
:class:`~fastlin.experiments.task.RunFailure`) per configuration, in the
order they finish; the runner saves each as it arrives. Handing over the
whole list is the seam for batched executors (a GPU executor that trains a
slice of same-shaped configurations in one kernel launch): such an executor
groups the list as it likes and registers itself with
:func:`register_executor`.

Built in:

* ``threads`` (default): a thread pool in this process, one configuration
  per thread. The Numba kernels release the GIL, so threads run in parallel.
* ``processes``: a pool of worker processes (``spawn``ed, so no lock or
  thread state is inherited), for backends that hold the GIL.
* ``gpu``: slices of same-data configurations trained together by the
  CUDA batch kernel (:class:`BatchExecutor`).
* ``dask``: a Dask distributed cluster: an existing scheduler
  (``scheduler="tcp://host:8786"``) whose workers may be other machines, or
  a LocalCluster of ``workers`` single-threaded worker processes. Results
  come back to this process, so the store need not be on a shared disk.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from typing import Callable, Iterator

from .grid import Config
from .task import RunFailure, run_config_safely


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


class Executor:
    """Interface of an executor; subclasses implement :meth:`run`."""

    name = "base"
    # Whether the workers run on this machine and load Numba's cached code
    # from the same place as this process (then the sweep compiles it here
    # first: runner.prepare_kernels).
    local = False

    def __init__(self, workers: int | None = None):
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                    or workers < 1):
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        self.workers = workers or default_workers()

    @property
    def kernel_threads(self) -> int:
        """Numba threads per worker: this machine's cores shared among the workers."""
        return max(1, default_workers() // self.workers)

    def run(self, configs: list[Config]) -> Iterator:
        """Yield a RunRecord or RunFailure for every configuration, as each finishes."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} x {self.workers}"

    def close(self) -> None:
        """Release workers (a no-op for pools that live only inside :meth:`run`)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _PoolExecutor(Executor):
    local = True

    def _pool(self) -> cf.Executor:
        raise NotImplementedError

    def run(self, configs):
        if not configs:
            return
        with self._pool() as pool:
            futures = {pool.submit(run_config_safely, c, self.kernel_threads): c for c in configs}
            try:
                for future in cf.as_completed(futures):
                    try:
                        yield future.result()
                    except Exception as exc:  # noqa: BLE001 - e.g. a worker process died
                        yield RunFailure(futures[future], f"{type(exc).__name__}: {exc}")
            finally:
                for future in futures:  # on interrupt: drop what has not started
                    future.cancel()


class ThreadExecutor(_PoolExecutor):
    """One configuration per thread; relies on the kernels releasing the GIL."""

    name = "threads"

    def _pool(self):
        return cf.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="fastlin")


class ProcessExecutor(_PoolExecutor):
    """One configuration per worker process."""

    name = "processes"

    def _pool(self):
        return cf.ProcessPoolExecutor(max_workers=self.workers,
                                      mp_context=multiprocessing.get_context("spawn"))


class DaskExecutor(Executor):
    """Dask distributed: an existing scheduler, or a LocalCluster of ``workers`` processes."""

    name = "dask"

    def __init__(self, workers: int | None = None, scheduler: str | None = None,
                 processes: bool = True):
        super().__init__(workers)
        try:
            import distributed  # noqa: F401
        except ImportError as exc:
            raise RuntimeError("the dask executor needs dask.distributed: "
                               "pip install 'fastlin[dask]'") from exc
        self.scheduler = scheduler
        self.local = scheduler is None  # a LocalCluster's workers share this machine's cache
        self.processes = processes
        self._client = None
        self._cluster = None

    def describe(self) -> str:
        if self.scheduler:
            return f"dask scheduler {self.scheduler}"
        return f"dask LocalCluster x {self.workers}"

    def client(self):
        """The Dask client, connecting (or starting the LocalCluster) on first use."""
        if self._client is None:
            from distributed import Client, LocalCluster

            if self.scheduler:
                self._client = Client(self.scheduler)
            else:
                self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                             processes=self.processes, dashboard_address=None)
                self._client = Client(self._cluster)
        return self._client

    def run(self, configs):
        if not configs:
            return
        from distributed import as_completed

        client = self.client()
        # On a remote cluster each worker process gets its machine's cores (1 Dask thread each);
        # on a LocalCluster they share this machine's.
        threads = None if self.scheduler else self.kernel_threads
        futures = client.map(run_config_safely, configs, kernel_threads=threads,
                             key=[f"fastlin-{c.id}" for c in configs], pure=False)
        owner = {f.key: c for f, c in zip(futures, configs)}
        try:
            for future in as_completed(futures):
                try:
                    yield future.result()
                except Exception as exc:  # noqa: BLE001 - e.g. a worker was lost
                    yield RunFailure(owner[future.key], f"{type(exc).__name__}: {exc}")
        finally:
            client.cancel(futures)

    def close(self):
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


class BatchExecutor(Executor):
    """Trains slices of the grid together through :func:`fastlin.train_batch`.

    Configurations that share the data, dtype and step count form a group;
    small ones (largest layer below ``max_batch_weights`` weights) are handed
    over ``batch_size`` at a time, so the CUDA backend trains a whole slice in
    one kernel launch per chunk of steps (one thread block per
    configuration); larger ones get a launch of their own. ``backend`` is the
    batch backend (``"cuda"``); any other backend trains the slice one
    configuration after another, which the tests use to check the grouping.
    """

    name = "gpu"

    def __init__(self, workers: int | None = None, backend: str = "cuda",
                 batch_size: int = 512, max_batch_weights: int = 128 * 128):
        super().__init__(workers)
        from ..kernels import load_backend

        load_backend(backend)  # a clear error now if this machine cannot run it
        self.backend = backend
        self.batch_size = batch_size
        self.max_batch_weights = max_batch_weights

    def describe(self) -> str:
        return f"batched on {self.backend} (up to {self.batch_size} configurations a launch)"

    def slices(self, configs: list[Config]) -> list[list[Config]]:
        """Group configurations that can share one launch, cheapest first."""
        groups: dict[tuple, list[Config]] = {}
        for c in sorted(configs, key=lambda c: c.step_weights):
            key = (c.data_seed, c.dx, c.n, c.dy, c.dtype, c.steps)
            groups.setdefault(key, []).append(c)
        out = []
        for group in groups.values():
            small = [c for c in group if max(c.dims[i] * c.dims[i - 1]
                                             for i in range(1, len(c.dims))) < self.max_batch_weights]
            large = [c for c in group if c not in small]
            out += [small[i:i + self.batch_size] for i in range(0, len(small), self.batch_size)]
            out += [[c] for c in large]
        return out

    def run(self, configs):
        from ..init import init_weights
        from ..train import train_batch
        from .store import RunRecord, hostname
        from .task import problem_data

        for part in self.slices(configs):
            first = part[0]
            try:
                X, Y = problem_data(first.data_seed, first.dx, first.n, first.dy, first.dtype)
                weights = [init_weights(c.dims, c.init, rng=c.seed, dtype=c.dtype) for c in part]
                lrs = [c.lr.learning_rate(X, c.depth, c.dy) for c in part]
                results = train_batch(weights, X, Y, lr=lrs, steps=first.steps, backend=self.backend,
                                      rtol_stop=[c.rtol_stop for c in part])
            except Exception as exc:  # noqa: BLE001 - reported per configuration, the sweep goes on
                for c in part:
                    yield RunFailure(c, f"{type(exc).__name__}: {exc}")
                continue
            share = results[0].seconds / len(part) if part else 0.0
            for c, lr, r in zip(part, lrs, results):
                yield RunRecord(config=c, loss=r.loss, status=r.status, steps_run=r.steps_run,
                                seconds=share if self.backend == "cuda" else r.seconds, lr=lr,
                                backend=self.backend, host=hostname())


EXECUTORS: dict[str, Callable[..., Executor]] = {
    "threads": ThreadExecutor,
    "processes": ProcessExecutor,
    "dask": DaskExecutor,
    "gpu": BatchExecutor,
}


def register_executor(name: str, factory: Callable[..., Executor]) -> None:
    """Make ``factory(workers=..., **options)`` available as ``executor=name``."""
    EXECUTORS[name] = factory


def make_executor(name: str = "threads", *, workers: int | None = None,
                  scheduler: str | None = None) -> Executor:
    """Build the executor ``name``; ``scheduler`` is only for ``dask``."""
    if isinstance(name, Executor):
        return name
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(map(repr, EXECUTORS))}")
    if scheduler is not None:
        if name != "dask":
            raise ValueError(f"a scheduler address is only used by the dask executor, not {name!r}")
        return EXECUTORS[name](workers=workers, scheduler=scheduler)
    return EXECUTORS[name](workers=workers)

