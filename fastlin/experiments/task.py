"""The unit of work of a sweep: train one configuration and return its record.

:func:`run_config` is a plain top-level function of picklable arguments, so
every executor (threads, processes, Dask workers on other machines) can call
it; the data X, Y are drawn once per process from the data seed and reused.
"""

from __future__ import annotations

import functools
import traceback
from dataclasses import dataclass

import numpy as np

from .grid import Config
from .store import RunRecord, hostname


@dataclass
class RunFailure:
    """A configuration that raised (not a divergence, which is a status): it is not stored."""

    config: Config
    error: str


@functools.lru_cache(maxsize=8)
def problem_data(data_seed: int, dx: int, n: int, dy: int, dtype: str):
    """X (dx x n) and Y = W* X (dy x n) of :func:`fastlin.paper_data`, read-only."""
    from ..init import paper_data

    X, Y = paper_data(rng=data_seed, dx=dx, n=n, dy=dy, dtype=np.dtype(dtype))
    X.setflags(write=False)
    Y.setflags(write=False)
    return X, Y


def run_config(config: Config) -> RunRecord:
    """Train ``config`` by full-batch GD and return its full loss history."""
    from ..init import init_weights
    from ..train import train

    X, Y = problem_data(config.data_seed, config.dx, config.n, config.dy, config.dtype)
    weights = init_weights(config.dims, config.init, rng=config.seed, dtype=config.dtype)
    lr = config.lr.learning_rate(X, config.depth, config.dy)
    result = train(weights, X, Y, lr=lr, steps=config.steps, backend=config.backend,
                   rtol_stop=config.rtol_stop)
    return RunRecord(config=config, loss=result.loss, status=result.status,
                     steps_run=result.steps_run, seconds=result.seconds, lr=lr,
                     backend=config.backend, host=hostname())


def set_kernel_threads(threads: int | None) -> None:
    """Let the CPU kernels started from this thread use at most ``threads`` threads.

    The kernel takes its thread budget from Numba's thread count, which is
    per calling thread, so each worker of a sweep sets its own share of the
    cores: two workers each splitting their nets over all cores would wait
    on each other at every barrier (L of them per step).
    """
    if threads is None:
        return
    import numba

    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))


def run_config_safely(config: Config, kernel_threads: int | None = None) -> RunRecord | RunFailure:
    """:func:`run_config` with at most ``kernel_threads`` kernel threads, an exception
    turned into a :class:`RunFailure`."""
    try:
        set_kernel_threads(kernel_threads)
        return run_config(config)
    except Exception as exc:  # noqa: BLE001 - reported per configuration, the sweep goes on
        tail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return RunFailure(config=config, error=tail)
