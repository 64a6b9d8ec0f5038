"""The GD driver: validation, backend dispatch, loss history and status."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from .kernels import COMPLETED, CONVERGED, DEFAULT_BACKEND, DIVERGED, STATUS_NAMES, load_backend
from .kernels.host import one_blas_thread
from .kernels.tuning import CHUNK_SECONDS
from .model import (check_dtype, check_lr, check_problem, check_steps, layer_rates, normalize_into,
                    to_normalized, to_raw)


class Chains(NamedTuple):
    """Cached chains at one step t, in normalized form (docs/design.md).

    A[i-1] = A_i = V_{i-1}...V_1 X for i = 1..L+1 (A[0] = X, A[L] = f(X));
    B[i] = B_i = V_L...V_{i+1} for i = 0..L (B[L] = I); E = f(X) - Y.
    """

    A: list
    B: list
    E: np.ndarray


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    loss : float64 array of shape (steps + 1,), loss(t) for t = 0..steps,
        loss = 1/2 ||alpha W_L...W_1 X - Y||_F^2. After convergence it holds
        its last value; after divergence it is NaN.
    weights : final raw paper weights W_1..W_L.
    status : "completed", "converged" (loss(t)/loss(0) <= rtol_stop) or
        "diverged" (first non-finite loss at step ``steps_run``).
    steps_run : GD steps actually taken.
    chains : {t: Chains} for the steps named in ``record``.
    ntk : {t: fastlin.ntk.NTKFactors} for the steps named in ``ntk``: the
        factors of Θ(t) = Σ_i c_i G_i ⊗ H_i, float64 whatever ``dtype``.
    """

    loss: np.ndarray
    weights: list
    status: str
    steps_run: int
    dims: list
    lr: float
    backend: str
    dtype: str
    seconds: float
    chains: dict = field(default_factory=dict)
    ntk: dict = field(default_factory=dict)

    @property
    def relative_loss(self) -> np.ndarray:
        """loss(t) / loss(0)."""
        return self.loss / self.loss[0]

    def ntk_trajectory(self):
        """Arrays (t, λ_min(Θ(t)), λ_max(Θ(t)), ‖Θ(t) − Θ(0)‖_F/‖Θ(0)‖_F) over the steps of ``ntk``.

        Needs step 0 among them; see :func:`fastlin.ntk.trajectory`.
        """
        from .ntk import trajectory

        return trajectory(self.ntk)


def prepare(backend: str = DEFAULT_BACKEND, dtype="float64") -> float:
    """Compile ``backend``'s kernels for ``dtype`` now (or load them from Numba's cache); returns the seconds it took.

    The first use of the CPU kernel compiles it (once per dtype, for every
    net shape and thread count; cached on disk afterwards); calling this
    first moves that time out of the first ``train`` call and its progress
    bar.
    """
    dtype = check_dtype(dtype)
    started = time.perf_counter()
    load_backend(backend).prepare(str(dtype))
    return time.perf_counter() - started


def _check_record(record, steps: int, name: str = "record") -> list[int]:
    if record is None:
        return []
    out = sorted({int(t) for t in record})
    bad = [t for t in out if t < 0 or t > steps]
    if bad:
        raise ValueError(f"{name} steps must lie in [0, steps={steps}], got {bad}")
    return out


def _check_rtol_stop(rtol_stop):
    if rtol_stop is not None and (not isinstance(rtol_stop, (int, float)) or not 0 < rtol_stop < 1):
        raise ValueError(f"rtol_stop must be a number in (0, 1), got {rtol_stop!r}")
    return rtol_stop


def _initial_status(loss0: float, rtol_stop) -> int:
    """DIVERGED if loss(0) is not finite, CONVERGED if it is 0 and a stop was asked for."""
    if not math.isfinite(loss0):
        return DIVERGED
    if loss0 == 0 and rtol_stop is not None:
        return CONVERGED
    return COMPLETED


def _finish_history(loss: np.ndarray, t: int, status: int) -> None:
    """After a stop at step t: hold the last loss (converged) or NaN (diverged)."""
    if status == CONVERGED:
        loss[t + 1:] = loss[t]
    elif status == DIVERGED:
        loss[t + 1:] = np.nan


def train(weights, X, Y, *, lr, steps, backend=DEFAULT_BACKEND, dtype=None, rtol_stop=None,
          progress=False, record=None, ntk=None) -> TrainResult:
    """Train a deep linear net f(x) = alpha W_L...W_1 x by full-batch GD.

    Parameters
    ----------
    weights : list of 2-D arrays
        Raw paper weights W_1..W_L (W_i of shape (d_i, d_{i-1})); not modified.
    X, Y : 2-D arrays, shapes (d_0, n) and (d_L, n).
    lr : float or "auto"
        The paper's learning rate on the raw W_i (e.g. :func:`theorem_lr`);
        ``"auto"``: 0.5 / λ_max(Θ(0)) of these weights, a quarter of GD's
        stability edge near init (:func:`fastlin.ntk.auto_lr`;
        ``result.lr`` holds the rate chosen).
    steps : int
        Number of GD steps.
    backend : "cpu" (default, Numba), "numpy" (the plain reference) or "cuda".
    dtype : float64 or float32, optional
        Working precision; by default the arrays' common dtype (mixed dtypes
        are refused unless this is given).
    rtol_stop : float in (0, 1), optional
        Stop with status "converged" once loss(t)/loss(0) <= rtol_stop.
    progress : bool
        Show a progress bar over steps.
    record : iterable of int, optional
        Steps t at which to keep the chains A_i, B_i, E (``result.chains``).
    ntk : iterable of int, optional
        Steps t at which to keep the factors of the NTK Θ(t)
        (``result.ntk``; :mod:`fastlin.ntk`), computed from the chains, which
        are not kept. Steps after a stop (convergence, divergence) are absent.
    """
    dims, dtype = check_problem(weights, X, Y, dtype)
    steps = check_steps(steps)
    _check_rtol_stop(rtol_stop)
    record_steps = _check_record(record, steps)
    ntk_steps = _check_record(ntk, steps, "ntk")
    if isinstance(lr, str):
        if lr != "auto":
            raise TypeError(f"lr must be a number or 'auto', got {lr!r}")
        from .ntk import auto_lr

        lr = auto_lr(weights, X)[0]
    lr = check_lr(lr)
    kernel = load_backend(backend)

    started = time.perf_counter()
    if hasattr(kernel, "empty_weights"):
        V = kernel.empty_weights(dims, dtype)  # normalized straight into the kernel's own layout
        normalize_into(weights, dims, V)
    else:
        V = to_normalized(weights, dims, dtype)
    with one_blas_thread():  # the host's products are skinny (kernels/host.py)
        state = kernel.init_state(V, np.ascontiguousarray(X, dtype=dtype),
                                  np.ascontiguousarray(Y, dtype=dtype), layer_rates(lr, dims))
    loss = np.full(steps + 1, np.nan)
    loss[0] = state.loss0
    loss_stop = -math.inf if rtol_stop is None else rtol_stop * state.loss0
    chains, ntk_factors = {}, {}
    t, status = 0, _initial_status(state.loss0, rtol_stop)
    stops = sorted(set(record_steps + ntk_steps)) + [steps]
    chunk = 1
    with tqdm(total=steps, disable=not progress, unit="step", desc=f"train L={len(dims) - 1}",
              leave=False) as bar:
        while status == COMPLETED:
            if (t in record_steps and t not in chains) or (t in ntk_steps and t not in ntk_factors):
                with one_blas_thread():
                    _record_step(kernel.chains(state), t, dims, chains if t in record_steps else None,
                                 ntk_factors if t in ntk_steps else None)
            if t == steps:
                break
            todo = min(chunk, next(s for s in stops if s > t) - t)
            tick = time.perf_counter()
            done, status = kernel.run_steps(state, loss[t + 1:t + 1 + todo], loss_stop)
            t += done
            bar.update(done)
            if time.perf_counter() - tick < CHUNK_SECONDS:
                chunk *= 2
    _finish_history(loss, t, status)
    final = to_raw(kernel.weights(state), dims, in_place=True)  # the state is done with
    return TrainResult(loss=loss, weights=final,
                       status=STATUS_NAMES[status], steps_run=t, dims=dims, lr=lr,
                       backend=backend, dtype=str(dtype),
                       seconds=time.perf_counter() - started, chains=chains, ntk=ntk_factors)


def _record_step(step_chains, t, dims, chains, ntk_factors) -> None:
    """Keep the chains at step t and/or the NTK factors computed from them (float64)."""
    if chains is not None:
        chains[t] = Chains(*step_chains)
    if ntk_factors is not None:
        from .ntk import chain_factors

        A, B, _ = step_chains
        ntk_factors[t] = chain_factors(A, B, dims)


def train_batch(weights_list, X, Y, *, lr, steps, backend="cuda", dtype=None, rtol_stop=None,
                progress=False) -> list[TrainResult]:
    """Train many deep linear nets on the same X, Y for the same number of steps.

    Each configuration c is trained exactly as ``train(weights_list[c], X, Y,
    lr=lr[c], steps=steps, rtol_stop=rtol_stop[c])`` would; a backend with a
    batch kernel (``"cuda"``: one thread block per configuration, all in one
    launch per chunk of steps, divergence and ``rtol_stop`` decided per
    configuration on the device) trains them together, other backends one
    after the other.

    Parameters
    ----------
    weights_list : list of weight lists
        Raw paper weights W_1..W_L of each configuration; depths and widths
        may differ, d_0 and d_L must match X and Y.
    lr : float or sequence of floats, one per configuration.
    rtol_stop : None, float, or sequence (None entries allowed).
    Other parameters as in :func:`train`. Returns one TrainResult per
    configuration, in order.
    """
    if isinstance(weights_list, np.ndarray) or not hasattr(weights_list, "__len__") or not weights_list:
        raise TypeError("weights_list must be a non-empty list of weight lists")
    C = len(weights_list)
    lrs = [lr] * C if np.ndim(lr) == 0 else list(lr)
    stops = [rtol_stop] * C if rtol_stop is None or np.ndim(rtol_stop) == 0 else list(rtol_stop)
    if len(lrs) != C or len(stops) != C:
        raise ValueError(f"lr and rtol_stop need one entry per configuration ({C})")
    kernel = load_backend(backend)
    if not hasattr(kernel, "init_batch"):
        return [train(W, X, Y, lr=a, steps=steps, backend=backend, dtype=dtype, rtol_stop=s,
                      progress=progress) for W, a, s in zip(weights_list, lrs, stops)]
    checked = [check_problem(W, X, Y, dtype) for W in weights_list]
    dtypes = {dt for _, dt in checked}
    if len(dtypes) > 1:
        raise TypeError(f"configurations have different dtypes {sorted(map(str, dtypes))}; pass dtype=")
    dtype = dtypes.pop()
    lrs = [check_lr(a) for a in lrs]
    steps = check_steps(steps)
    for s in stops:
        _check_rtol_stop(s)

    started = time.perf_counter()
    dims_list = [d for d, _ in checked]
    Vs = [to_normalized(W, d, dtype) for W, d in zip(weights_list, dims_list)]
    batch = kernel.init_batch(Vs, np.ascontiguousarray(X, dtype=dtype), np.ascontiguousarray(Y, dtype=dtype),
                              [layer_rates(a, d) for a, d in zip(lrs, dims_list)])
    loss = np.full((C, steps + 1), np.nan)
    loss[:, 0] = batch.loss0
    loss_stop = np.array([-math.inf if s is None else s * l0 for s, l0 in zip(stops, batch.loss0)])
    t = np.zeros(C, dtype=np.int64)
    status = np.array([_initial_status(l0, s) for l0, s in zip(batch.loss0, stops)])
    chunk = 1
    with tqdm(total=steps, disable=not progress, unit="step", desc=f"train_batch C={C}", leave=False) as bar:
        while True:
            active = (status == COMPLETED) & (t < steps)
            if not active.any():
                break
            todo = np.where(active, np.minimum(chunk, steps - t), 0)
            width = int(todo.max())
            out = np.empty((C, width))
            tick = time.perf_counter()
            done, st = kernel.run_batch(batch, todo, loss_stop, out)
            for c in np.flatnonzero(active):
                loss[c, t[c] + 1:t[c] + 1 + done[c]] = out[c, :done[c]]
                t[c] += done[c]
                status[c] = st[c]
            bar.update(int(t.min()) - bar.n)
            if time.perf_counter() - tick < CHUNK_SECONDS:
                chunk *= 2
    seconds = time.perf_counter() - started
    results = []
    for c in range(C):
        _finish_history(loss[c], t[c], status[c])
        raw = to_raw(kernel.batch_weights(batch, c), dims_list[c], in_place=True)  # batch_weights: copies
        results.append(TrainResult(loss=loss[c], weights=raw,
                                   status=STATUS_NAMES[int(status[c])], steps_run=int(t[c]),
                                   dims=dims_list[c], lr=lrs[c], backend=backend, dtype=str(dtype),
                                   seconds=seconds))
    return results
