"""Training kernels: one module or package per backend, the same function names in each.

Every backend (``reference``, ``cpu``, ``cuda``) exposes

* ``init_state(V, X, Y, eta)``: take ownership of the normalized weights
  V_1..V_L (list of C-contiguous arrays, one dtype), the data and the per-layer
  rates eta_i = lr / d_i; return a backend state holding loss(0) as
  ``state.loss0``.
* ``run_steps(state, loss_out, loss_stop)``: run up to ``len(loss_out)`` GD
  steps, writing loss(t) of each into ``loss_out`` (float64); stop after a
  non-finite loss (DIVERGED) or a loss <= ``loss_stop`` (CONVERGED). Returns
  ``(steps_done, status)``.
* ``weights(state)``: the current V_1..V_L; they may be views of the state's
  buffers, valid until the next ``run_steps`` (copy them to keep them; a
  caller done with the state may keep and modify them instead).
* ``empty_weights(dims, dtype)`` (optional): arrays for V_1..V_L laid out as
  the backend stores them; ``init_state`` adopts such arrays, once filled,
  without a copy.
* ``chains(state)``: the prefix chains A_1..A_{L+1} (A_1 = X, A_{L+1} = f),
  suffix chains B_0..B_L (B_L = I) and the residual E = f - Y at the current
  step.
* ``prepare(dtype)``: compile the kernels now (or load them from Numba's cache).

``BACKENDS`` is the one dispatch table; ``load_backend`` imports a backend on
first use, so that importing fastlin compiles nothing and needs no GPU.
"""

from __future__ import annotations

import importlib

COMPLETED, CONVERGED, DIVERGED = 0, 1, 2
STATUS_NAMES = {COMPLETED: "completed", CONVERGED: "converged", DIVERGED: "diverged"}

BACKENDS = {
    "numpy": "fastlin.kernels.reference",
    "cpu": "fastlin.kernels.cpu",
    "cuda": "fastlin.kernels.cuda",
}
DEFAULT_BACKEND = "cpu"


def load_backend(name: str):
    """The kernel module of backend ``name``, or a clear error if it is unknown or unavailable here."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(map(repr, BACKENDS))}")
    try:
        module = importlib.import_module(BACKENDS[name])
    except ImportError as exc:
        raise RuntimeError(f"backend {name!r} is not available on this machine: {exc}") from exc
    if not getattr(module, "available", lambda: True)():
        raise RuntimeError(f"backend {name!r} is not available on this machine: numba.cuda found no usable "
                           f"CUDA GPU (set NUMBA_ENABLE_CUDASIM=1 for the simulator)")
    return module


def available_backends() -> list[str]:
    """The backends that load on this machine, in the order of the table (numpy, cpu, cuda)."""
    out = []
    for name in BACKENDS:
        try:
            load_backend(name)
        except RuntimeError:
            continue
        out.append(name)
    return out
