"""Numba decorators and their options: the one place they are set (CONVENTIONS.md 6).

fastmath is a subset, never ``True``: ``contract`` lets LLVM fuse a*b + c
into one FMA and ``reassoc`` lets it vectorize the dot-product reductions of
the tile kernels. Neither assumes finite values (no ``nnan``/``ninf``), so a
NaN or inf still propagates to the loss and divergence is detected.

``nogil`` lets several configurations train in parallel Python threads;
``cache`` stores the compiled machine code next to the module (safe here: no
function-valued arguments). Parallel regions need a thread-safe threading
layer when kernels are called from several threads at once: fastlin asks for
one (OpenMP or TBB) unless the user chose a layer via NUMBA_THREADING_LAYER.
"""

import os

import numba

FASTMATH = {"contract", "reassoc"}

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "threadsafe"

serial = numba.njit(nogil=True, cache=True, fastmath=set(FASTMATH))
parallel = numba.njit(nogil=True, cache=True, fastmath=set(FASTMATH), parallel=True)

# Start the threading layer now. A parallel function that is only ever called
# from other compiled code (as the layer sweeps are, from the step loop) and
# loaded from the cache would otherwise find the layer's launch function
# unset and jump to a null pointer.
numba.get_num_threads()
