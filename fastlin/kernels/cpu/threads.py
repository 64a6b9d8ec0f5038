"""The CPU kernel's threads: which rows each sweeps, how they meet, and whether a chunk runs on one or all.

**Ranges.** A net wide enough (``splits``) is split into R ranges per layer,
one per thread: of rows going up, and going down of columns (layers swept
in strips) or of rows (the others). Ranges start at multiples of
RANGE_UNIT rows or columns (a float32 strip, and a multiple of ROW_TILE),
so every row and column has the same arithmetic whether one thread sweeps
all ranges or each thread its own: both give the same bits.

**Meeting.** A chunk of steps on R threads runs the one compiled kernel
(``passes.run_chunk``) in R Python threads at once, each for the whole
chunk; the kernel releases the GIL, and the threads wait for each other
between layers at ``barrier`` (a few atomic loads) instead of returning to
Python per layer. A barrier costs 0.04-0.35 us on the 2-core VM, depending
on how far apart its vCPUs are. ``flags`` is an int64 array of at least
``R * FLAG_STRIDE`` zeros before the chunk starts; each thread's word lies
on its own cache line. The waiting thread spins, then yields its core at
every poll (SPINS_BEFORE_YIELD): with more busy threads than cores
(several trainings in parallel), the thread it waits for may need it.

**One or all.** For mid-sized nets the faster choice depends on the
machine's state, not only on the size: on the 2-core VM the two vCPUs are
sometimes close (a barrier costs 0.04-0.09 us) and sometimes far apart
(0.34-0.36 us), and the host switches between the two within minutes. So
the kernel times its chunks and keeps, per net shape, the seconds per step
of each choice (``Chooser``); a chunk runs the faster one (all threads
until both are timed) and now and then the other, to notice when the
machine changes. The results do not depend on the choice.
"""

from __future__ import annotations

import os
import threading

from numba.core import types

from ..llvm import load_acquire, pause, store_release
from ..options import serial
from ..tuning import EXPLORE_EVERY, FAR, NEWEST_WEIGHT, RANGE_UNIT, SPINS_BEFORE_YIELD, THREADS_MIN_WEIGHTS

FLAG_STRIDE = 8  # int64 words per cache line


def splits(dims) -> bool:
    """Whether a net of widths ``dims`` = [d_0, ..., d_L] is split into one range per thread.

    It is when its widest swept layer (2..L) has at least THREADS_MIN_WEIGHTS
    weights; its chunks then run on all threads or on one, else on one.
    """
    return any(int(dims[k]) * int(dims[k + 1]) >= THREADS_MIN_WEIGHTS for k in range(1, len(dims) - 1))


@serial
def unit_range(d, t, T):
    """Thread t's share [lo, hi) of range(d) among T: contiguous, in whole units of RANGE_UNIT."""
    units = (d + RANGE_UNIT - 1) // RANGE_UNIT
    return min(units * t // T * RANGE_UNIT, d), min(units * (t + 1) // T * RANGE_UNIT, d)


@serial
def thread_range(d, t, T, R):
    """The rows (or columns) of range(d) that thread t of T sweeps: all of them (T = 1) or range t of R (T = R).

    One thread may take all R ranges in one go wherever the arithmetic of
    each row or column does not depend on where its range starts (ranges
    start at multiples of RANGE_UNIT, so the tile kernels' row groups agree).
    """
    if T == 1:
        return 0, d
    return unit_range(d, t, R)


if os.name == "posix":
    _sched_yield = types.ExternalFunction("sched_yield", types.int32())

    @serial
    def _yield_core():
        """Let the OS run another thread on this core (sched_yield)."""
        _sched_yield()
else:
    @serial
    def _yield_core():
        pause()


@serial
def _wait_for(flags, i, value):
    """Poll until flags[i] >= value: spin a while, then yield the core at every poll."""
    k = 0
    while load_acquire(flags, i) < value:
        if k < SPINS_BEFORE_YIELD:
            pause()
            k += 1
        else:
            _yield_core()


@serial
def barrier(flags, t, T, epoch):
    """Wait until all T threads have passed ``epoch`` barriers; returns epoch + 1.

    Each thread publishes how many barriers it has reached in its own word
    (release) and waits until every other word has caught up (acquire), so
    all writes made before the barrier are visible after it.
    """
    epoch += 1
    if T == 1:
        return epoch
    store_release(flags, t * FLAG_STRIDE, epoch)
    for u in range(T):
        _wait_for(flags, u * FLAG_STRIDE, epoch)
    return epoch


def run_on_threads(T: int, work) -> None:
    """``work(t)`` for t = 0..T-1 at once: 1..T-1 on new Python threads, 0 on this one; an exception is raised here.

    ``work`` calls a compiled kernel that releases the GIL, so the threads
    run in parallel and meet at the kernel's barriers. A thread started per
    chunk costs tens of microseconds, against chunks of tens of milliseconds
    and more.
    """
    errors = []

    def thread(t):
        try:
            work(t)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(exc)

    helpers = [threading.Thread(target=thread, args=(t,), name=f"fastlin-kernel-{t}", daemon=True)
               for t in range(1, T)]
    for helper in helpers:
        helper.start()
    thread(0)
    for helper in helpers:
        helper.join()
    if errors:
        raise errors[0]


class Chooser:
    """Seconds per step of one thread (choice 1) and of R threads (choice R) for one net shape."""

    def __init__(self, ranges: int):
        self.ranges = ranges
        self.rate: dict[int, float] = {}
        self.chunks = 0
        self.lock = threading.Lock()

    def next(self) -> int:
        """The number of threads for the next chunk: 1 or ``ranges``."""
        with self.lock:
            self.chunks += 1
            if self.ranges not in self.rate:
                return self.ranges
            if 1 not in self.rate:
                return 1
            best = min(self.rate, key=self.rate.get)
            worse = 1 if best == self.ranges else self.ranges
            every = EXPLORE_EVERY * (4 if self.rate[worse] > FAR * self.rate[best] else 1)
            return worse if self.chunks % every == 0 else best

    def record(self, threads: int, seconds_per_step: float) -> None:
        with self.lock:
            old = self.rate.get(threads)
            self.rate[threads] = seconds_per_step if old is None else (
                NEWEST_WEIGHT * seconds_per_step + (1 - NEWEST_WEIGHT) * old)


_choosers: dict = {}
_choosers_lock = threading.Lock()


def chooser(shape_key, ranges: int) -> Chooser:
    """The Chooser of one net shape (shared by all states of that shape in this process)."""
    with _choosers_lock:
        key = (shape_key, ranges)
        if key not in _choosers:
            _choosers[key] = Chooser(ranges)
        return _choosers[key]
