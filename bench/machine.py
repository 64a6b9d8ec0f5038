"""This machine's limits, measured: memory copy bandwidth and dense gemm rates.

The benchmark report prints every achieved GB/s and GFLOP/s next to these,
so a number reads as a fraction of what the hardware did on a plain copy or
a big matrix product, not of a datasheet figure.

* copy bandwidth: ``np.copyto`` of a 256 MiB float64 array (well beyond any
  cache), split over 1 and over all cores (threads: numpy releases the GIL
  while copying); bytes counted = read + write = 2 x array bytes (write
  allocation traffic not counted, as in STREAM's copy). Best of repeats.
* gemm rate: ``A @ B`` of square matrices (numpy's BLAS, all cores),
  2 n^3 flops, best of repeats; float64 (dgemm) and float32 (sgemm).

With them the CPU as LLVM names it and whether the kernels were built with
512-bit vectors (AVX-512 hosts, fastlin/kernels/options.py), so that a
saved run says which build it timed.

Run ``python bench/machine.py`` to print them alone.
"""

from __future__ import annotations

import os
import threading
import time
from functools import lru_cache

import numpy as np

COPY_BYTES = 256 << 20
GEMM_SIZE = 1536
REPEATS = 5


def _best_time(fn, repeats=REPEATS) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def copy_bandwidth(nbytes=COPY_BYTES, threads=None, repeats=REPEATS) -> float:
    """Copy bandwidth in GB/s (10^9 bytes/s), read + write, best over 1..threads threads."""
    threads = threads or os.cpu_count() or 1
    src = np.ones(nbytes // 8)
    dst = np.zeros_like(src)
    best = 0.0
    for t in sorted({1, threads}):
        parts = [(s.start, s.stop) for s in _split(len(src), t)]

        def copy_all():
            workers = [threading.Thread(target=np.copyto, args=(dst[a:b], src[a:b])) for a, b in parts]
            for w in workers:
                w.start()
            for w in workers:
                w.join()

        copy_all()  # touch the pages once
        best = max(best, 2 * src.nbytes / _best_time(copy_all, repeats) / 1e9)
    return best


def _split(size, parts):
    edges = np.linspace(0, size, parts + 1).astype(int)
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def gemm_rate(dtype=np.float64, size=GEMM_SIZE, repeats=REPEATS) -> float:
    """Dense matrix product rate in GFLOP/s (2 n^3 flops per n x n product)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    out = np.empty_like(a)
    np.matmul(a, b, out=out)  # warm up the BLAS thread pool
    return 2 * size**3 / _best_time(lambda: np.matmul(a, b, out=out), repeats) / 1e9


@lru_cache(maxsize=None)
def limits() -> dict:
    """Measured limits of this machine: copy GB/s, dgemm and sgemm GFLOP/s, core count.

    ``other_cores``: cores used by other processes meanwhile (see :class:`OtherLoad`).
    """
    with OtherLoad() as others:
        measured = {
            "cores": os.cpu_count(),
            "copy_GBps": round(copy_bandwidth(), 2),
            "dgemm_GFLOPs": round(gemm_rate(np.float64), 2),
            "sgemm_GFLOPs": round(gemm_rate(np.float32), 2),
        }
    measured["other_cores"] = None if others.cores is None else round(others.cores, 2)
    return {**measured, **build()}


def build() -> dict:
    """The CPU as LLVM names it and whether fastlin's kernels are built with 512-bit vectors (options.py)."""
    from fastlin.kernels.options import compile_target, wide_vectors_used

    return {"llvm_cpu": compile_target()[0], "wide_vectors": wide_vectors_used()}


# Cores that idled (while a fresh state was built, in Python) run the next
# few tens of milliseconds of work up to 2x slower on this VM: fastlin-cpu at
# L64 m256 ran 10.6-18.9 ms/step right after building a state and 5.6-6.1
# ms/step after 50 ms of busy cores (the host gives an idle vCPU back slowly).
# Every timed round is therefore preceded by this much spinning on all cores.
SETTLE_SECONDS = 0.05


@lru_cache(maxsize=None)
def _spin_kernel():
    # A measuring tool of the bench, not a fastlin kernel: its Numba options
    # stay here (no cache: nothing to keep between runs of the bench).
    import numba
    from numba import prange

    @numba.njit(parallel=True, cache=False)
    def spin(n, out):
        for t in prange(out.size):
            x = 0.0
            for _ in range(n):
                x = x * 0.999999 + 1.0
            out[t] = x

    out = np.zeros(numba.get_num_threads())
    spin(1000, out)
    n = 1_000_000
    while True:  # iterations per second of one spinning core
        start = time.perf_counter()
        spin(n, out)
        elapsed = time.perf_counter() - start
        if elapsed > 0.02:
            return spin, out, n / elapsed
        n *= 4


def settle_cores(seconds: float = SETTLE_SECONDS) -> None:
    """Keep every core busy for about ``seconds`` (no memory traffic), so the next timing starts warm."""
    spin, out, rate = _spin_kernel()
    spin(int(seconds * rate), out)


class OtherLoad:
    """CPU time used by *other* processes while a block runs, in cores (Linux /proc).

    ``with OtherLoad() as load: ...`` then ``load.cores``: (busy jiffies of
    the whole machine - jiffies of this process) / elapsed time. About 0 on a
    quiet machine; ~1 means another process held a whole core, and a
    multi-threaded timing on 2 cores is then not to be trusted. ``None``
    where /proc is not available.
    """

    def __init__(self):
        self.cores = None

    @staticmethod
    def _sample():
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
        busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
        with open("/proc/self/stat") as fh:
            own = fh.read().rsplit(")", 1)[1].split()
        mine = int(own[11]) + int(own[12])  # utime + stime of all threads
        return busy, mine, time.perf_counter()

    def __enter__(self):
        try:
            self._start = self._sample()
        except (OSError, ValueError, IndexError):
            self._start = None
        return self

    def __exit__(self, *exc):
        if self._start is not None:
            busy, mine, now = self._sample()
            ticks = os.sysconf("SC_CLK_TCK")
            others = (busy - self._start[0]) - (mine - self._start[1])
            self.cores = max(0.0, others / ticks / max(now - self._start[2], 1e-9))
        return False


def rounds_for(runner, steps: int, budget: float, min_rounds: int, max_rounds: int) -> int:
    """Rounds of ``runner.run(steps)`` that fit ``budget`` seconds, timed by one warm-up round (after ``reset``)."""
    runner.reset()
    start = time.perf_counter()
    runner.run(steps)
    warm_s = time.perf_counter() - start
    return int(min(max_rounds, max(min_rounds, budget // (warm_s + SETTLE_SECONDS))))


def gemm_limit(machine: dict, dtype) -> float:
    """The gemm rate of ``machine`` (a :func:`limits` dict) for ``dtype``."""
    return machine["sgemm_GFLOPs"] if np.dtype(dtype) == np.float32 else machine["dgemm_GFLOPs"]


if __name__ == "__main__":
    for key, value in limits().items():
        print(f"{key:>14}: {value}")
