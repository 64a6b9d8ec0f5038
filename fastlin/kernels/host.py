"""Host-side code shared by the cpu and cuda backends: chain levels, the chains at step 0, reading chains back, V_1.

Both backends keep, per net, the chain levels j = 0..L of two halves each
(``A2`` level j is (2n, d_j), ``B2`` level j is (2 d_y, d_j); old half first,
new half second; see ``cpu/layout.py``), step the first layer through
Z = V_1 X, and alternate upward and downward passes. What the host does
with those buffers is the same for both and lives here; each backend hands
over its own ``level(buffer, j)`` views.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from .reference import prefix_chain, suffix_chain

_controller = None
_controller_lock = threading.Lock()


def one_blas_thread():
    """A context in which NumPy's BLAS runs on one thread (threadpoolctl).

    The host's products are skinny (10 x m times m x m, m x m times m x 16):
    OpenBLAS splits them between its threads and, on the 2-core machine,
    they took 4x as long as on one thread (``train(steps=0)`` at L16 m1024:
    331 against 87 ms); its threads also compete with the kernel's and with
    other configurations' for the cores.
    """
    global _controller
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a dependency; without it, BLAS as it is
        return contextlib.nullcontext()
    with _controller_lock:
        if _controller is None:
            _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")


def level_offsets(dims, rows) -> np.ndarray:
    """Start of each chain level j = 0..L in a flat buffer whose level j is (rows, d_j); int64, length L + 2."""
    return np.concatenate([[0], np.cumsum(rows * np.asarray(dims, dtype=np.int64))]).astype(np.int64)


def start_chains(A_level, B_level, V, X, Y):
    """Fill the chain levels for step 0 (an upward pass) with NumPy and return E(0) = f(0) - Y.

    ``A_level(j)`` and ``B_level(j)`` are writable views of level j of A2 and
    B2. Level 0 of A2 is X^T in both halves (read by ``read_chains`` only);
    the top level of B2 is the identity in both halves (the top of every
    downward pass). The upward pass of step 0 needs Z(0)^T = (V_1 X)^T in the
    new half of A2's level 1 and the suffix chains B_1(0)..B_L(0) in the new
    halves of B2 (B_0 is read by no pass: ``read_chains`` forms it). Overflow
    is not an error here: a net that diverges at once gets a non-finite
    loss(0), which the driver reports as a status. (The cpu backend forms
    the same levels with its own compiled sweeps.)
    """
    L = len(V)
    n, dy = X.shape[1], Y.shape[0]
    A_level(0)[:] = np.concatenate([X.T, X.T])
    B = B_level(L)
    B[:] = np.concatenate([np.eye(dy)] * 2)
    with np.errstate(over="ignore", invalid="ignore"), one_blas_thread():
        Z = V[0] @ X
        A_level(1)[n:] = Z.T
        f = Z
        for k in range(1, L):
            f = V[k] @ f
        for j in range(L - 1, 0, -1):  # B_j = B_{j+1} V_{j+1}, as reference.suffix_chain forms it
            B_below = B_level(j)
            np.matmul(B[dy:], V[j], out=B_below[dy:])
            B = B_below
        return f - Y


def first_layer(V1_start, S_T, X):
    """V_1 now, from V_1 at the start and the first layer's accumulated change S^T (n, d_1): V_1 - S X^T."""
    with np.errstate(over="ignore", invalid="ignore"), one_blas_thread():
        return V1_start - S_T.T @ X.T


def read_chains(V, X, phase, A_level, B_level, E, prefix=prefix_chain, suffix=suffix_chain):
    """Chains (A_1..A_{L+1}, B_0..B_L, E) at the current step: the cached side read, the other recomputed.

    After an upward pass (``phase`` 1) the new halves of A2 hold the prefix
    chains A(t); after a downward pass (``phase`` 0) the new halves of B2
    hold B_1..B_L (B_0 = B_1 V_1 is not formed by the kernels), and
    ``prefix(V, X)`` recomputes A_1..A_{L+1}; ``suffix(V)`` recomputes
    B_0..B_L in the other case (a backend may pass compiled code for both).
    """
    n, dy = X.shape[1], E.shape[0]
    L = len(V)
    with np.errstate(over="ignore", invalid="ignore"), one_blas_thread():
        if phase == 1:
            A = [A_level(j)[n:].T.copy() for j in range(L + 1)]
            B = suffix(V)
        else:
            A = prefix(V, X)
            B = [B_level(j)[dy:].copy() for j in range(L + 1)]
            B[0] = B[1] @ V[0]
    return A, B, np.array(E)
