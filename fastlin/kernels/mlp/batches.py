"""The minibatch generator every backend shares: splitmix64 driving a partial Fisher-Yates shuffle.

Each step draws B of the n samples without replacement: positions 0..B-1
of a permutation array ``perm`` are shuffled in (partial Fisher-Yates,
each swap partner uniform by rejection sampling), and ``perm[:B]`` is the
batch. ``perm`` is kept between steps; a partial shuffle of any
permutation gives a uniformly random ordered B-subset, so each step's
batch is uniform and independent of the previous ones given the stream.

The functions are compiled (``serial``): the NumPy reference calls them
from Python, the compiled training loops from inside, and both get the
same integers, hence the same batches, for the same seed.
"""

import numpy as np

from ..options import serial

# splitmix64 (Steele, Lea & Flood 2014): a Weyl sequence through a 64-bit mixer.
_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_SHIFT_1, _SHIFT_2, _SHIFT_3 = np.uint64(30), np.uint64(27), np.uint64(31)


def seed_state(seed) -> np.ndarray:
    """A generator state (one uint64 word in an array, updated in place) from an integer seed."""
    return np.array([int(seed) % 2**64], dtype=np.uint64)


@serial
def next_word(state):
    """The next 64-bit output of the stream; advances ``state[0]``."""
    z = state[0] + _GOLDEN_GAMMA
    state[0] = z
    z = (z ^ (z >> _SHIFT_1)) * _MIX_1
    z = (z ^ (z >> _SHIFT_2)) * _MIX_2
    return z ^ (z >> _SHIFT_3)


@serial
def below(state, k):
    """A uniform integer in [0, k), k >= 1: words below 2^64 mod k are rejected, so every residue is equally likely."""
    kk = np.uint64(k)
    reject_below = (np.uint64(0) - kk) % kk  # 2^64 mod k
    while True:
        word = next_word(state)
        if word >= reject_below:
            return np.int64(word % kk)


@serial
def draw_batch(state, perm, size):
    """Shuffle a uniform random ordered ``size``-subset of ``perm`` into ``perm[:size]``."""
    n = perm.size
    for i in range(size):
        j = i + below(state, n - i)
        perm[i], perm[j] = perm[j], perm[i]
