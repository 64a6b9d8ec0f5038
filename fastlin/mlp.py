"""Nonlinear chains (tanh nets, Huang, Du & Xu's setting): init, validation and the SGD driver.

Standard parametrization: z_i = W_i h_{i-1} + b_i, h_i = phi(z_i) for
i < L, f = z_L, samples as columns. :func:`init_mlp` draws Huang, Du & Xu's
inits (IJCAI 2021) with the second moments of the Gaussian for both;
:func:`train_mlp` runs SGD (or full-batch GD) on the mean per-example loss
with one of the backends of :mod:`fastlin.kernels.mlp`.

A net without biases is written ``biases=None``: b_i = 0 throughout and
nothing is trained for them (``result.biases`` is None).
"""

from __future__ import annotations

import importlib
import math
import numbers
import time
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from .init import INITS, as_generator, init_weights
from .kernels.mlp import ACTIVATIONS, COMPLETED, CROSS_ENTROPY, DIVERGED, LOSSES, Setup
from .kernels.tuning import CHUNK_SECONDS
from .model import (check_data_shapes, check_dims, check_dtype, check_finite, check_lr, check_positive_int, check_steps,
                    common_dtype, weight_dims)

# One explicit dispatch table; modules load on first use.
MLP_BACKENDS = {
    "numpy": "fastlin.kernels.mlp.reference",
    "cpu": "fastlin.kernels.mlp.cpu",
}
# Status of a run stopped by ``stop_accuracy`` (the kernels know only COMPLETED and DIVERGED).
REACHED = "reached"
_STATUS_NAMES = {COMPLETED: "completed", DIVERGED: "diverged"}
# Chunks of steps grow until one takes CHUNK_SECONDS (as in train.py): Python
# loops over chunks, never over single steps of a fast kernel.


@dataclass
class MLPResult:
    """Outcome of :func:`train_mlp`.

    loss : float64 array (steps + 1,): loss[t] is the objective (mean loss)
        of the weights after t steps on batch t, the batch step t + 1 uses
        (loss[0] on the first batch; the whole training set at full batch).
        NaN after ``steps_run``.
    eval_steps, train_accuracy, test_accuracy : the steps t = 0, k, 2k, ...
        (k = ``eval_every``; or the steps of ``eval_at``), up to
        ``steps_run``, and the accuracy of the weights after t steps on the
        whole training set and on the test set (None without a test set);
        empty without an evaluation schedule.
    weights, biases : the final W_i and b_i (biases None for a net without).
    status : "completed", "diverged" (the objective at step ``steps_run``
        is not finite) or "reached" (the training accuracy reached
        ``stop_accuracy`` at step ``steps_run``).
    """

    loss: np.ndarray
    eval_steps: np.ndarray
    train_accuracy: np.ndarray
    test_accuracy: np.ndarray | None
    weights: list
    biases: list | None
    status: str
    steps_run: int
    dims: list
    lr: float
    batch_size: int | None
    activation: str
    loss_fn: str
    backend: str
    dtype: str
    seconds: float


def _check_variance(value, name: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {value}")
    return float(value)


def init_mlp(dims, init, *, sigma_w2=1.05, sigma_b2=2.01e-5, rng=None, dtype=np.float64):
    """Weights and biases ``(W_1..W_L, b_1..b_L)`` of a net of widths ``dims`` = [d_0, ..., d_L].

    ``init="gaussian"``: W_i iid N(0, sigma_w^2 / d_{i-1}).
    ``init="orthogonal"``: W_i = sigma_w sqrt(max(d_i, d_{i-1}) / d_{i-1}) Q_i,
    Q_i Haar with orthonormal columns or rows (:func:`haar_orthogonal`): the
    Gaussian's second moments on every layer, tall ones included.
    Biases b_i iid N(0, sigma_b^2) for both. The defaults are the linear
    regime of tanh used by Huang, Du & Xu. Drawn in float64, then rounded
    once to ``dtype``.
    """
    dims = check_dims(dims)
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    sigma_w2 = _check_variance(sigma_w2, "sigma_w2", positive=True)
    sigma_b2 = _check_variance(sigma_b2, "sigma_b2", positive=False)
    dtype = check_dtype(dtype)
    gen = as_generator(rng)
    # init_weights gives N(0, 1) entries, or sqrt(max(d_i, d_{i-1})) Haar:
    # both of second moment 1, scaled here to sigma_w^2 / d_{i-1}.
    raw = init_weights(dims, init, rng=gen, dtype=np.float64)
    weights = [np.ascontiguousarray(W * math.sqrt(sigma_w2 / dims[i]), dtype=dtype) for i, W in enumerate(raw)]
    biases = [(math.sqrt(sigma_b2) * gen.standard_normal(d)).astype(dtype) for d in dims[1:]]
    return weights, biases


def get_mlp_backend(name: str):
    """The kernel module for ``name``, or a clear error if unknown or unavailable."""
    if name not in MLP_BACKENDS:
        raise ValueError(f"unknown backend {name!r} for train_mlp; choose one of "
                         f"{', '.join(map(repr, MLP_BACKENDS))}")
    try:
        return importlib.import_module(MLP_BACKENDS[name])
    except ImportError as exc:
        raise RuntimeError(f"backend {name!r} is not available on this machine: {exc}") from exc


def _check_choice(value, choices, name: str) -> int:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")
    return choices[value]


def _check_matrix(M, name: str) -> None:
    if not isinstance(M, np.ndarray) or M.ndim != 2:
        raise TypeError(f"{name} must be a 2-D numpy array, got {type(M).__name__}")
    if M.dtype not in (np.float64, np.float32):
        raise TypeError(f"{name} has dtype {M.dtype}; fastlin trains in float64 or float32")
    check_finite(M, name)


def _check_data(X, Y, dims, loss_code, names) -> np.ndarray:
    """Shapes and values of a data set; returns its labels (argmax of each column of Y)."""
    _check_matrix(X, names[0])
    _check_matrix(Y, names[1])
    check_data_shapes(X, Y, dims, names)
    if loss_code == CROSS_ENTROPY:
        ones = (Y == 1).sum(axis=0)
        if not (np.all((Y == 0) | (Y == 1)) and np.all(ones == 1)):
            bad = int(np.flatnonzero(~(((Y == 0) | (Y == 1)).all(axis=0) & (ones == 1)))[0])
            raise ValueError(f"{names[1]} must be one-hot for cross_entropy (one 1 and zeros in every "
                             f"column); column {bad} is {Y[:, bad]}")
    return np.argmax(Y, axis=0).astype(np.int64)


def _check_biases(biases, dims):
    if biases is None:
        return None
    if isinstance(biases, np.ndarray) or not hasattr(biases, "__len__"):
        raise TypeError("biases must be a list of 1-D arrays b_1..b_L, or None for a net without biases")
    if len(biases) != len(dims) - 1:
        raise ValueError(f"{len(dims) - 1} layers need {len(dims) - 1} biases, got {len(biases)}")
    for i, b in enumerate(biases, start=1):
        if not isinstance(b, np.ndarray) or b.shape != (dims[i],):
            shape = b.shape if isinstance(b, np.ndarray) else type(b).__name__
            raise ValueError(f"b_{i} must be a numpy array of shape ({dims[i]},), got {shape}")
        if b.dtype not in (np.float64, np.float32):
            raise TypeError(f"b_{i} has dtype {b.dtype}; fastlin trains in float64 or float32")
        check_finite(b, f"b_{i}")
    return list(biases)


def _check_batch_size(batch_size, n):
    if batch_size is None:
        return None
    batch_size = check_positive_int(batch_size, "batch_size")
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} is larger than the {n} training samples")
    return batch_size


def _check_eval(eval_every, eval_at, steps, X_test, Y_test, stop_accuracy) -> list[int] | None:
    """The steps at which to evaluate (at most ``steps``), or None for no evaluation."""
    if eval_every is not None and eval_at is not None:
        raise ValueError("pass eval_every or eval_at, not both")
    schedule = None
    if eval_every is not None:
        schedule = list(range(0, steps + 1, check_positive_int(eval_every, "eval_every")))
    elif eval_at is not None:
        if isinstance(eval_at, (str, bytes)) or not hasattr(eval_at, "__iter__"):
            raise TypeError(f"eval_at must be a sequence of steps, got {eval_at!r}")
        at = list(eval_at)
        for t in at:
            if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 0:
                raise ValueError(f"eval_at must hold steps (ints >= 0), got {t!r}")
        schedule = sorted({int(t) for t in at if t <= steps})
    if (X_test is None) != (Y_test is None):
        raise ValueError("X_test and Y_test go together: pass both or neither")
    if X_test is not None and not schedule:
        raise ValueError("the test set is evaluated on a schedule: pass eval_every or eval_at too "
                         f"(with steps in [0, {steps}])")
    if stop_accuracy is not None:
        if isinstance(stop_accuracy, bool) or not isinstance(stop_accuracy, numbers.Real) \
                or not 0 < stop_accuracy <= 1:
            raise ValueError(f"stop_accuracy must be a number in (0, 1], got {stop_accuracy!r}")
        if not schedule:
            raise ValueError("stop_accuracy is checked at evaluations: pass eval_every or eval_at too "
                             f"(with steps in [0, {steps}])")
    return schedule


def _seed(rng) -> int:
    """The batch generator's 64-bit seed: an int seed itself, else drawn from a Generator (None: fresh)."""
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        if not 0 <= rng < 2**64:
            raise ValueError(f"rng must be an int seed in [0, 2**64), got {rng}")
        return int(rng)
    return int(as_generator(rng).integers(2**63))


def train_mlp(weights, biases, X, Y, *, activation="tanh", loss="cross_entropy", lr, steps,
              batch_size=None, rng=None, eval_every=None, eval_at=None, X_test=None, Y_test=None,
              stop_accuracy=None, backend="cpu", dtype=None, progress=False) -> MLPResult:
    """Train a net z_i = W_i h_{i-1} + b_i, h_i = phi(z_i), f = z_L by SGD on the mean loss.

    Parameters
    ----------
    weights, biases : W_1..W_L (W_i of shape (d_i, d_{i-1})) and b_1..b_L
        (shape (d_i,)), e.g. from :func:`init_mlp`; ``biases=None`` for a
        net without biases. Not modified.
    X, Y : training data, shapes (d_0, n) and (d_L, n); Y one-hot for
        cross-entropy, any real targets for mse.
    activation : "tanh", "linear" or "relu" (phi).
    loss : "cross_entropy" (-log softmax(f)_label) or "mse" (1/2 ||f - y||^2),
        averaged over the batch.
    lr, steps : the step W <- W - lr dl/dW, taken ``steps`` times.
    batch_size : None for full-batch GD; else B samples drawn without
        replacement at every step from a generator seeded by ``rng`` (an
        int seed, a numpy Generator or None), the same on every backend.
    eval_every : evaluate the accuracy (largest output at the label) on
        the whole training set, and on X_test, Y_test if given, every this
        many steps (and at step 0).
    eval_at : instead of ``eval_every``, the steps at which to evaluate
        (e.g. log-spaced ones, for a first-passage time read on a log axis).
    stop_accuracy : stop (status "reached") once the training accuracy at
        an evaluation is at least this.
    backend : "cpu" (Numba, default) or "numpy" (the textbook reference).
    dtype : float64 or float32; by default the arrays' common dtype.
    progress : show a progress bar over steps.
    """
    dims = weight_dims(weights)
    act_code = _check_choice(activation, ACTIVATIONS, "activation")
    loss_code = _check_choice(loss, LOSSES, "loss")
    for i, W in enumerate(weights, start=1):
        _check_matrix(W, f"W_{i}")
    biases = _check_biases(biases, dims)
    labels = _check_data(X, Y, dims, loss_code, ("X", "Y"))
    lr = check_lr(lr)
    steps = check_steps(steps)
    batch_size = _check_batch_size(batch_size, X.shape[1])
    schedule = _check_eval(eval_every, eval_at, steps, X_test, Y_test, stop_accuracy)
    test_labels = None if X_test is None else _check_data(X_test, Y_test, dims, loss_code, ("X_test", "Y_test"))
    arrays = [("X", X), ("Y", Y)] + [(f"W_{i}", W) for i, W in enumerate(weights, start=1)]
    arrays += [] if biases is None else [(f"b_{i}", b) for i, b in enumerate(biases, start=1)]
    arrays += [] if X_test is None else [("X_test", X_test), ("Y_test", Y_test)]
    dtype = common_dtype(arrays, dtype)
    if not 0 < lr <= float(np.finfo(dtype).max) or dtype.type(lr) == 0:
        raise ValueError(f"lr = {lr!r} is not a positive finite {dtype.name}")
    seed = _seed(rng)
    kernel = get_mlp_backend(backend)

    started = time.perf_counter()
    def convert(M):  # a copy only where the dtype or layout differs
        return np.ascontiguousarray(M, dtype=dtype)

    bias_list = [np.zeros(d, dtype) for d in dims[1:]] if biases is None else [convert(b) for b in biases]
    setup = Setup(act_code, loss_code, lr, batch_size or 0, seed, biases is not None)
    X_work = convert(X)
    state = kernel.init_state([convert(W) for W in weights], bias_list, X_work, convert(Y), setup)
    X_eval = None if X_test is None else convert(X_test)

    history = np.full(steps + 1, np.nan)
    history[0] = state.loss0
    status = COMPLETED if math.isfinite(state.loss0) else DIVERGED
    reached = False
    evaluated, train_acc, test_acc = [], [], []

    def evaluate(t):
        evaluated.append(t)
        train_acc.append(kernel.accuracy(state, X_work, labels))
        if X_eval is not None:
            test_acc.append(kernel.accuracy(state, X_eval, test_labels))
        return stop_accuracy is not None and train_acc[-1] >= stop_accuracy

    t, chunk = 0, 1
    pending = list(schedule or [])
    if pending and pending[0] == 0 and status == COMPLETED:
        reached = evaluate(0)
    pending = [s for s in pending if s > 0]
    with tqdm(total=steps, disable=not progress, unit="step", desc=f"train_mlp L={len(dims) - 1}",
              leave=False) as bar:
        while status == COMPLETED and not reached and t < steps:
            stop = pending[0] if pending else steps
            todo = min(chunk, stop - t)
            tick = time.perf_counter()
            done, status = kernel.run_steps(state, history[t + 1:t + 1 + todo])
            t += done
            bar.update(done)
            if time.perf_counter() - tick < CHUNK_SECONDS:
                chunk *= 2
            if status == COMPLETED and pending and t == pending[0]:
                pending.pop(0)
                reached = evaluate(t)
    history[t + 1:] = np.nan
    return MLPResult(
        loss=history, eval_steps=np.array(evaluated, dtype=np.int64),
        train_accuracy=np.array(train_acc, dtype=np.float64),
        test_accuracy=None if X_eval is None else np.array(test_acc, dtype=np.float64),
        weights=kernel.weights(state), biases=kernel.biases(state) if biases is not None else None,
        status=REACHED if reached else _STATUS_NAMES[status], steps_run=t, dims=dims, lr=lr,
        batch_size=batch_size, activation=activation, loss_fn=loss, backend=backend, dtype=str(dtype),
        seconds=time.perf_counter() - started)
