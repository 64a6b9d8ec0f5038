"""numba.cuda backend: the one-pass fused GD step on the GPU (docs/design.md).

Same interface as ``reference`` and ``cpu`` (``init_state``, ``run_steps``,
``weights``, ``chains``), plus the batch interface behind
:func:`fastlin.train_batch` (``init_batch``, ``run_batch``,
``batch_weights``): many configurations sharing X, Y and the step count,
trained in one launch, one thread block each.

Weights and chains stay on the device for the whole run; a call of
``run_steps`` is one kernel launch that runs the whole chunk of steps
(looping over layers and steps inside the kernel) and writes loss(t) of
every step on the device, and the host copies back only that loss history
(the weights only when asked). Divergence and ``rtol_stop`` are decided on
the device, per configuration.

Mode of a single configuration: ``"coop"`` (one cooperative grid, grid sync
between layers) once its largest layer has ``COOP_MIN_WEIGHTS`` weights,
else ``"block"`` (one block, block sync). A grid sync costs about 1.7 us on
an H100 (docs/design.md), while one SM does the ~72 flops per weight of a 64 x 64
fp64 layer in about 1.5 us, so below roughly 128 x 128 a single block wins.
The threshold (``tuning.COOP_MIN_WEIGHTS``) is that estimate, not yet a
measurement: tune it with bench/bench_cuda.py on a GPU. Set ``state.mode`` before the first
``run_steps`` to force one.

Importing this package raises ImportError when numba-cuda is missing;
``available()`` says whether a GPU (or the simulator) is usable. The
dispatch (``kernels.load_backend``) turns either into a clear error.
"""

from __future__ import annotations

import numpy as np

from .. import COMPLETED, host, tuning
from ..reference import half_squared_norm
from .compat import SIMULATOR, available, cuda  # noqa: F401  (available: the backend's own check)
from .step import SHARED_LIMIT, make_step_kernel, shared_bytes, step_signature



class Batch:
    """Device buffers of C configurations sharing X (d_0 x n) and Y (d_y x n).

    Per configuration: its weights V_1..V_L in one flat buffer (V_1 as
    given: the kernel steps Z = V_1 X instead), the chain levels A2/B2 (two
    halves each, as in the CPU kernel; level 1 of A2 is Z^T), a factor buffer
    F, the first layer's accumulated step S^T, E, the pass direction and its
    metadata (see ``step``).
    """

    def __init__(self, Vs, X, Y, etas, tpb=None, up_rows=None, down_cols=None, reduction_bytes=None):
        # Defaults read at call time, so tests and benchmarks can change tuning's.
        tpb = tpb or tuning.THREADS_PER_BLOCK
        up_rows = up_rows or tuning.UP_ROWS
        down_cols = down_cols or tuning.DOWN_COLS
        reduction_bytes = reduction_bytes or tuning.REDUCTION_BYTES
        dtype = np.dtype(X.dtype)
        self.dtype = dtype
        self.n, self.dy = X.shape[1], Y.shape[0]
        n, dy = self.n, self.dy
        rank = min(n, dy)
        self.tpb, self.up_rows, self.down_cols = tpb, up_rows, down_cols
        self.reduction_bytes = reduction_bytes
        need = shared_bytes(n, dy, dtype, tpb, up_rows, down_cols, reduction_bytes)
        if need > SHARED_LIMIT:
            raise ValueError(f"n * d_y = {n * dy} too large for the cuda kernel: it keeps E in "
                             f"shared memory ({need} bytes > {SHARED_LIMIT})")
        C = len(Vs)
        self.C = C
        self.L = np.array([len(V) for V in Vs], dtype=np.int64)
        Lmax = int(self.L.max())
        self.dims = np.zeros((C, Lmax + 1), dtype=np.int64)
        self.voff = np.zeros((C, Lmax + 1), dtype=np.int64)
        self.aoff = np.zeros((C, Lmax + 2), dtype=np.int64)
        self.boff = np.zeros((C, Lmax + 2), dtype=np.int64)
        self.foff = np.zeros((C, 3), dtype=np.int64)
        self.soff = np.zeros(C, dtype=np.int64)
        self.eta = np.zeros((C, Lmax), dtype=dtype)
        v_at = a_at = b_at = f_at = s_at = 0
        for c, V in enumerate(Vs):
            dims = np.array([X.shape[0]] + [Vi.shape[0] for Vi in V], dtype=np.int64)
            L = len(V)
            self.dims[c, :L + 1] = dims
            self.voff[c, :L + 1] = v_at + np.concatenate([[0], np.cumsum(dims[1:] * dims[:-1])])
            self.aoff[c, :L + 2] = a_at + host.level_offsets(dims, 2 * n)
            self.boff[c, :L + 2] = b_at + host.level_offsets(dims, 2 * dy)
            ld = int(dims.max())
            self.foff[c] = (f_at, f_at + rank * ld, ld)
            self.soff[c] = s_at
            s_at += n * int(dims[1])
            self.eta[c, :L] = etas[c]
            v_at = int(self.voff[c, L])
            a_at = int(self.aoff[c, L + 1])
            b_at = int(self.boff[c, L + 1])
            f_at += 2 * rank * ld
        V_h = np.concatenate([Vi.ravel() for V in Vs for Vi in V]).astype(dtype, copy=False)
        A2_h = np.zeros(a_at, dtype=dtype)
        B2_h = np.zeros(b_at, dtype=dtype)
        E_h = np.zeros((C, dy * n), dtype=dtype)
        self.loss0 = np.zeros(C)
        for c, V in enumerate(Vs):
            E = host.start_chains(lambda j: self._level(A2_h, self.aoff, c, j),
                                  lambda j: self._level(B2_h, self.boff, c, j), V, X, Y)
            E_h[c] = E.ravel()
            self.loss0[c] = half_squared_norm(E)
        self.X = X
        self.Y = Y
        to = cuda.to_device
        self.d_V, self.d_A2, self.d_B2 = to(V_h), to(A2_h), to(B2_h)
        self.d_F = to(np.zeros(max(f_at, 1), dtype=dtype))
        self.d_S = to(np.zeros(s_at, dtype=dtype))
        self.d_E, self.d_ft = to(E_h), to(np.zeros((C, n * dy), dtype=dtype))
        self.d_Y = to(np.ascontiguousarray(Y))
        self.d_G = to(np.ascontiguousarray(X.T @ X, dtype=dtype))
        self.d_meta = [to(a) for a in (self.dims, self.voff, self.aoff, self.boff, self.foff,
                                       self.soff, self.eta, self.L)]
        self.d_phase = to(np.zeros(C, dtype=np.int64))
        self.phase = np.zeros(C, dtype=np.int64)
        self.mode = "block"
        self.grid = None
        self._host = {}  # host copies of device buffers, made once after each run

    def _level(self, buf, off, c, j):
        return buf[off[c, j]:off[c, j + 1]].reshape(-1, self.dims[c, j])

    def kernel(self):
        return make_step_kernel(self.n, self.dy, self.dtype, self.mode == "coop", self.tpb,
                                self.up_rows, self.down_cols, self.reduction_bytes)

    def run(self, todo, loss_stop, loss_out):
        """Run ``todo[c]`` steps of configuration c, loss(t) into ``loss_out[c]``; returns (done, status)."""
        C = self.C
        d_loss = cuda.device_array((C, max(1, loss_out.shape[1])), dtype=np.float64)
        d_done = cuda.device_array(C, dtype=np.int64)
        d_status = cuda.device_array(C, dtype=np.int64)
        args = (self.d_V, self.d_A2, self.d_B2, self.d_F, self.d_S, self.d_E, self.d_ft, self.d_Y,
                self.d_G, *self.d_meta, self.d_phase, cuda.to_device(np.asarray(todo, dtype=np.int64)),
                cuda.to_device(np.asarray(loss_stop, dtype=np.float64)), d_loss, d_done, d_status)
        kernel = self.kernel()
        if self.mode == "coop":
            kernel[self._coop_grid(kernel), self.tpb](*args)
        else:
            kernel[C, self.tpb](*args)
        self._host = {}
        loss_h = d_loss.copy_to_host()
        loss_out[:, :] = loss_h[:, :loss_out.shape[1]]
        self.phase = self.d_phase.copy_to_host()
        return d_done.copy_to_host(), d_status.copy_to_host()

    def _coop_grid(self, kernel):
        """Blocks of the cooperative grid: no more than can be co-resident, nor than tiles of work."""
        if self.grid is None:
            # Tiles of the swept layers 2..L, and the first layer's columns of Z^T.
            dims = self.dims[0, :self.L[0] + 1]
            work = max([-(-int(dims[1]) // self.tpb)]
                       + [-(-int(d) // self.up_rows) for d in dims[2:]]
                       + [-(-int(d) // self.down_cols) for d in dims[1:-1]])
            if SIMULATOR:
                limit = 1  # the simulator runs a cooperative grid of one block only
            else:
                limit = kernel.compile(step_signature(self.dtype)).max_cooperative_grid_blocks(self.tpb)
            self.grid = max(1, min(work, limit))
        return self.grid

    def host(self, name):
        """Host copy of device buffer ``name`` ("V", "S", "A2", "B2", "E"), copied once after each run.

        ``fastlin.train_batch`` asks for the weights of every configuration in
        turn: one copy serves them all, where a copy per configuration would
        move C times the whole batch.
        """
        if name not in self._host:
            self._host[name] = getattr(self, "d_" + name).copy_to_host()
        return self._host[name]

    def weights(self, c):
        """V_1..V_L of configuration c now; V_1 = V_1(0) - S X^T."""
        V_h = self.host("V")
        V = [V_h[self.voff[c, k]:self.voff[c, k + 1]].reshape(self.dims[c, k + 1], self.dims[c, k]).copy()
             for k in range(self.L[c])]
        S_T = self.host("S")[self.soff[c]:self.soff[c] + self.n * self.dims[c, 1]]
        V[0] = host.first_layer(V[0], S_T.reshape(self.n, self.dims[c, 1]), self.X)
        return V

    def chains(self, c):
        """Chains at the current step of configuration c: the cached side read, the other recomputed."""
        E = self.host("E")[c].reshape(self.dy, self.n)
        return host.read_chains(self.weights(c), self.X, self.phase[c],
                                lambda j: self._level(self.host("A2"), self.aoff, c, j),
                                lambda j: self._level(self.host("B2"), self.boff, c, j), E)


class State:
    """One configuration: a batch of one, in cooperative-grid or single-block mode."""

    def __init__(self, V, X, Y, eta, **options):
        self.batch = Batch([V], X, Y, [eta], **options)
        self.loss0 = float(self.batch.loss0[0])
        largest = max(Vi.size for Vi in V)
        self.batch.mode = "coop" if largest >= tuning.COOP_MIN_WEIGHTS else "block"

    @property
    def mode(self):
        return self.batch.mode

    @mode.setter
    def mode(self, value):
        if value not in ("coop", "block"):
            raise ValueError(f"mode must be 'coop' or 'block', got {value!r}")
        self.batch.mode = value
        self.batch.grid = None


def init_state(V, X, Y, eta, **options) -> State:
    """``options``: tpb, up_rows, down_cols, reduction_bytes of the kernel (tests and benchmarks)."""
    return State(V, X, Y, eta, **options)


def run_steps(state: State, loss_out, loss_stop: float):
    if len(loss_out) == 0:
        return 0, COMPLETED
    out = np.empty((1, len(loss_out)))
    done, status = state.batch.run([len(loss_out)], [loss_stop], out)
    k = int(done[0])
    loss_out[:k] = out[0, :k]
    return k, int(status[0])


def weights(state: State):
    return state.batch.weights(0)


def chains(state: State):
    return state.batch.chains(0)


# Batch interface (fastlin.train_batch).


def init_batch(Vs, X, Y, etas, **options) -> Batch:
    """Device state of many configurations (normalized weights ``Vs[c]``, rates ``etas[c]``)."""
    return Batch(Vs, X, Y, etas, **options)


def run_batch(batch: Batch, todo, loss_stop, loss_out):
    """Run ``todo[c]`` steps of each configuration in one launch (0 skips it); see ``Batch.run``."""
    return batch.run(todo, loss_stop, loss_out)


def batch_weights(batch: Batch, c):
    return batch.weights(c)


def prepare(dtype="float64", n=16, dy=10) -> None:
    """Compile the step kernels (both modes) for ``dtype`` and n samples, d_y outputs (default: the paper's data).

    Kernels are specialized per (n, d_y, dtype); other shapes compile at
    their first launch. Under the simulator there is nothing to compile.
    """
    if SIMULATOR:
        return
    for coop in (False, True):
        make_step_kernel(n, dy, np.dtype(dtype), coop).compile(step_signature(np.dtype(dtype)))
