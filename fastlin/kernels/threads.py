"""Whether the next chunk of steps runs on one thread or on all: measured, per net shape.

For mid-sized nets the answer depends on the machine's state, not only on
the size: on the 2-core VM the benchmarks run on, the two vCPUs are
sometimes close (a barrier costs 0.04-0.09 us) and sometimes far apart
(0.34-0.36 us; every cache line a thread reads from the other costs several
times more), and the host switches between the two within minutes
(bench/cores.py). At L = 8, m = 32 all threads were 1.26x faster than one in
the first state and 2x slower in the second (bench/threshold.py,
bench/README.md). So the CPU kernel times its chunks and keeps, per net
shape, the seconds per step of each choice; a chunk runs the faster one (all
threads until both are timed), and now and then (EXPLORE_EVERY) the other,
to notice when the machine changes. The results do not depend on the
choice: a net is split into the same row ranges either way (cpu.py,
``up_pass``).
"""

from __future__ import annotations

import threading

# Every this many chunks of one net shape the slower choice is timed again;
# four times as rarely when it was more than FAR times slower (then it costs
# little to look, and it is unlikely to have become the faster).
EXPLORE_EVERY = 16
FAR = 1.5
# Weight of the newest measurement in a choice's running estimate.
NEWEST_WEIGHT = 0.5


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
