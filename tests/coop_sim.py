"""Cooperative grids of several blocks under the numba CUDA simulator, for the tests.

The stock simulator runs the blocks of a launch one after another and treats
``cuda.cg.this_grid().sync()`` as a block sync, so a cooperative grid must be
ONE block there, and everything the cooperative kernel does across blocks
(the split of tiles among blocks, data one block writes and another reads, the
grid syncs that order them) would first run on a GPU. This module runs a
launch of several blocks as a sequence of phases, one phase between two grid
syncs:

* within a phase the blocks run one at a time, in a fixed ``order``
  ("forward": block 0 first, "reverse": the last block first), each until all
  its threads wait at the grid sync or have returned; inside a block the
  threads run concurrently and meet at ``syncthreads`` as in the simulator;
* then every thread is released from the grid sync and the next phase runs.

A read of data that another block writes in the same phase (a missing grid
sync) then sees the old value in one order and the new one in the other, so a
kernel that matches the reference in both orders has its cross-block
dependencies ordered by grid syncs. Threads of one block waiting at different
barriers (one at a block sync, one at the grid sync) raise an error, as they
would hang on a GPU. Shared arrays are per block, as on a GPU.

Use: ``with multi_block_grids("reverse"): ...`` around launches whose
cooperative grid was set to several blocks (``Batch.grid``).
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from contextlib import contextmanager

import numpy as np
from numba.core import types
from numba.np import numpy_support


def _simulator():
    from numba.cuda.simulator import kernel, kernelapi

    return kernel, kernelapi


class _Thread:
    """Mixin of the grid-sync wait for the simulator's BlockThread."""

    def grid_sync(self):
        if self.abort:
            raise RuntimeError("abort flag set on grid sync")
        self.grid_blocked = True
        self.grid_event.wait()
        self.grid_event.clear()
        if self.abort:
            raise RuntimeError("abort flag set on grid sync release")


def _grid_sync(self):
    threading.current_thread().grid_sync()


def _shared_array(self, shape, dtype, alignment=None):
    """Static shared arrays of one block: one per call site and block."""
    if shape == 0:
        raise NotImplementedError("dynamic shared memory in a phased multi-block grid")
    if isinstance(dtype, types.Type):
        dtype = numpy_support.as_dtype(dtype)
    caller = tuple(traceback.extract_stack(sys._getframe())[-2][0:2])
    key = (caller, tuple(threading.current_thread().blockIdx))
    if not hasattr(self, "_per_block"):
        self._per_block = {}
    if key not in self._per_block:
        self._per_block[key] = np.empty(shape, dtype)
    return self._per_block[key]


def _make_manager(order):
    kernel, _ = _simulator()

    class GridThread(_Thread, kernel.BlockThread):
        def __init__(self, *args):
            super().__init__(*args)
            self.grid_blocked = False
            self.grid_event = threading.Event()

    class PhaseGridManager:
        """Stands in for the simulator's BlockManager: the first block's call runs the whole grid."""

        def __init__(self, f, grid_dim, block_dim, debug):
            self._f, self._grid_dim, self._block_dim, self._debug = f, grid_dim, block_dim, debug
            self.block_state = np.zeros(block_dim, dtype=np.bool_)

        def run(self, grid_point, *args):
            if any(grid_point):
                return  # done with block 0's call
            blocks = list(np.ndindex(*self._grid_dim))
            if order == "reverse":
                blocks.reverse()
            threads = {b: None for b in blocks}
            while True:
                for b in blocks:
                    if threads[b] is None:
                        threads[b] = [GridThread(lambda: self._f(*args), self, b, p, self._debug)
                                      for p in np.ndindex(*self._block_dim)]
                        for t in threads[b]:
                            t.start()
                    else:
                        for t in threads[b]:
                            if t.is_alive():
                                t.grid_blocked = False
                                t.grid_event.set()
                    self._run_block(b, threads[b])
                everyone = [t for ts in threads.values() for t in ts]
                if not any(t.is_alive() for t in everyone):
                    return

        def _run_block(self, b, threads):
            """Until every live thread of block b waits at the grid sync (or none is left)."""
            while True:
                for t in threads:
                    if t.exception:
                        for other in threads:
                            other.abort = True
                            other.syncthreads_blocked = False
                            other.syncthreads_event.set()
                            other.grid_event.set()
                        raise t.exception[0].with_traceback(t.exception[1])
                live = [t for t in threads if t.is_alive()]
                if not live:
                    return
                if any(not t.syncthreads_blocked and not t.grid_blocked for t in live):
                    time.sleep(0)
                    continue
                if all(t.grid_blocked for t in live):
                    return
                if all(t.syncthreads_blocked for t in live):
                    for t in live:
                        t.syncthreads_blocked = False
                        t.syncthreads_event.set()
                    continue
                raise RuntimeError(f"block {b}: some threads wait at syncthreads, others at the grid sync")

    return PhaseGridManager


@contextmanager
def multi_block_grids(order="forward"):
    """Run simulator launches as phased multi-block cooperative grids (module docstring)."""
    if order not in ("forward", "reverse"):
        raise ValueError(f"order must be 'forward' or 'reverse', got {order!r}")
    kernel, kernelapi = _simulator()
    saved = kernel.BlockManager, kernelapi.GridGroup.sync, kernelapi.FakeCUDAShared.array
    kernel.BlockManager = _make_manager(order)
    kernelapi.GridGroup.sync = _grid_sync
    kernelapi.FakeCUDAShared.array = _shared_array
    try:
        yield
    finally:
        kernel.BlockManager, kernelapi.GridGroup.sync, kernelapi.FakeCUDAShared.array = saved
