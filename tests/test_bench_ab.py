"""bench/ab.py: the sizes it parses and the old kernel it loads beside the current one (and removes)."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import load_bench

ROOT = Path(__file__).parents[1]
ab = load_bench("ab")


def test_sizes_parse_and_bad_ones_are_refused():
    assert ab.parse_sizes("32x32,64x256") == [(32, 32), (64, 256)]
    assert ab.parse_sizes("1x7") == [(1, 7)]
    for bad in ("32", "3y4", "0x8", "8x", "-1x8", "8x8,"):
        with pytest.raises(SystemExit, match="LxM"):
            ab.parse_sizes(bad)


def _in_git_checkout():
    if shutil.which("git") is None:
        return False
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True)
    return done.returncode == 0


@pytest.mark.skipif(not _in_git_checkout(), reason="needs a git checkout")
def test_revision_loads_as_its_own_package_and_is_removed():
    copy = ab.PACKAGE / ab.COPY
    assert not copy.exists()
    try:
        old = ab.load_revision("HEAD")
        assert old.__name__ == "fastlin._kernels_ab.cpu"
        assert copy.is_dir() and callable(old.run_steps) and callable(old.init_state)
        from fastlin.kernels import cpu

        assert old is not cpu
    finally:
        ab.remove_revision()
    assert not copy.exists()
    assert not [n for n in sys.modules if n.startswith("fastlin._kernels_ab")]
    with pytest.raises(SystemExit, match="no fastlin/kernels at"):
        ab.load_revision("no-such-revision")
    assert not copy.exists()


def test_paired_ratio_is_the_median_of_per_round_ratios():
    rng = np.random.default_rng()
    new = rng.uniform(1.0, 2.0, 9)
    noise = rng.uniform(0.5, 3.0, 9)  # the host's slowdown, the same for both in a round
    mid, lo, hi = ab.paired_ratio(1.25 * new * noise, new * noise)
    assert mid == pytest.approx(1.25) and lo == pytest.approx(1.25) and hi == pytest.approx(1.25)
    mid, lo, hi = ab.paired_ratio([2.0, 3.0, 8.0], [1.0, 1.0, 1.0])
    assert (mid, lo, hi) == (3.0, 2.5, 5.5)


class _Kernel:
    """A stand-in kernel module whose states stop after one step unless ``healthy``."""

    __name__ = "stand-in"

    def __init__(self, healthy):
        self.healthy = healthy
        self.built = 0

    def init_state(self, V, X, Y, eta):
        self.built += 1
        return type("State", (), {"stale": False})()

    def run_steps(self, state, loss_out, loss_stop):
        full = self.healthy and not state.stale
        return (loss_out.size if full else 1), 0


def test_a_chunk_that_stops_early_is_timed_again_on_a_fresh_state():
    problem = ([np.eye(2)], np.eye(2), np.eye(2), [0.1])
    mod = _Kernel(healthy=True)
    stale = mod.init_state(*problem)
    stale.stale = True
    states = [stale]
    ms = ab.timed_chunk(mod, states, 0, problem, "one", 8)
    assert ms > 0 and states[0] is not stale and not states[0].stale and mod.built == 2
    with pytest.raises(SystemExit, match="stops within 8 steps"):
        ab.timed_chunk(_Kernel(healthy=False), [stale], 0, problem, "one", 8)
