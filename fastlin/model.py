"""Shapes, the paper's parametrization and its normalized form, validation.

The model of Hu, Xiao & Pennington (ICLR 2020) is
f(x) = alpha W_L ... W_1 x with alpha = prod_i d_i^(-1/2). alpha underflows
(10^-1050 at L = 700, m = 1000), so fastlin never forms it: kernels work on
V_i = W_i / sqrt(d_i), for which f = V_L ... V_1 x exactly, and plain GD on W
with rate eta is plain GD on V_i with rate eta / d_i.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


def check_positive_int(value, name: str) -> int:
    """``value`` as an int >= 1, or a TypeError/ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def check_dtype(dtype) -> np.dtype:
    """float64 or float32 as a numpy dtype; anything else is refused."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float64 or float32, got {dtype!r}") from exc
    if dt not in DTYPES:
        raise TypeError(f"dtype must be float64 or float32, got {dt}")
    return dt


def check_dims(dims) -> list[int]:
    """Layer sizes ``[d_0, ..., d_L]`` (L >= 1), every entry a positive int."""
    dims = list(dims)
    if len(dims) < 2:
        raise ValueError(f"dims must list d_0..d_L with L >= 1 (at least 2 entries), got {dims}")
    return [check_positive_int(d, f"dims[{i}]") for i, d in enumerate(dims)]


def weight_dims(weights) -> list[int]:
    """``[d_0, ..., d_L]`` of a weight list, checking the shape chain."""
    if isinstance(weights, np.ndarray) or not hasattr(weights, "__len__") or len(weights) == 0:
        raise TypeError("weights must be a non-empty list of 2-D arrays W_1..W_L")
    dims = None
    for i, W in enumerate(weights, start=1):
        if not isinstance(W, np.ndarray) or W.ndim != 2:
            raise TypeError(f"W_{i} must be a 2-D numpy array, got {type(W).__name__}"
                            + (f" with ndim {W.ndim}" if isinstance(W, np.ndarray) else ""))
        if dims is None:
            dims = [W.shape[1]]
        elif W.shape[1] != dims[-1]:
            raise ValueError(f"shape chain mismatch: W_{i} has shape {W.shape}, so it takes "
                             f"{W.shape[1]} inputs, but W_{i - 1} gives {dims[-1]} outputs")
        dims.append(W.shape[0])
    if min(dims) < 1:
        raise ValueError(f"every layer size must be positive, got dims {dims}")
    return dims


def check_finite(array: np.ndarray, name: str) -> None:
    """A ValueError naming ``name`` if ``array`` holds a NaN or an inf.

    One pass without a temporary: the sum of finite numbers is finite unless
    it overflows, and any NaN or inf makes it non-finite; only a non-finite
    sum is checked entry by entry.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(array, axis=None)
    if not np.isfinite(total) and not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")


def check_data_shapes(X, Y, dims, names=("X", "Y")) -> None:
    """X of shape (d_0, n) and Y of shape (d_L, n) with n >= 1, for a net of widths ``dims``."""
    x, y = names
    if X.shape[0] != dims[0]:
        raise ValueError(f"{x} has {X.shape[0]} rows but W_1 takes d_0 = {dims[0]} inputs")
    if Y.shape[0] != dims[-1]:
        raise ValueError(f"{y} has {Y.shape[0]} rows but W_L gives d_L = {dims[-1]} outputs")
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"{x} and {y} must have the same number of columns (samples), "
                         f"got {X.shape[1]} and {Y.shape[1]}")
    if X.shape[1] < 1:
        raise ValueError(f"{x} and {y} need at least one column (sample)")


def common_dtype(arrays, dtype=None) -> np.dtype:
    """The float dtype of ``arrays`` ((name, array) pairs), all alike, or ``dtype`` to convert them to.

    Converting to a narrower dtype must not overflow: a value beyond its
    range would become infinite, and the run a false "divergence"
    (non-finite values are left to ``check_finite``).
    """
    for name, M in arrays:
        if M.dtype not in DTYPES:
            raise TypeError(f"{name} has dtype {M.dtype}; fastlin trains in float64 or float32")
    if dtype is None:
        found = {M.dtype for _, M in arrays}
        if len(found) > 1:
            listing = ", ".join(f"{name}: {M.dtype}" for name, M in arrays)
            raise TypeError(f"mixed dtypes ({listing}); convert them or pass dtype= explicitly")
        return np.dtype(found.pop())
    dtype = check_dtype(dtype)
    limit = float(np.finfo(dtype).max)
    for name, M in arrays:
        if M.dtype.itemsize > dtype.itemsize and M.size and limit < max(M.max(), -M.min()) < math.inf:
            raise ValueError(f"{name} holds values beyond {dtype.name}'s range (|x| > {limit:.3g}): "
                             f"converting it to {dtype.name} would make them infinite")
    return dtype


def check_problem(weights, X, Y, dtype=None):
    """Validate a training problem; return ``(dims, dtype)``.

    Checks the shape chain of the weights, X of shape (d_0, n) and Y of shape
    (d_L, n), one float dtype shared by all arrays (or ``dtype`` given, to
    convert explicitly, within its range), and finiteness.
    """
    dims = weight_dims(weights)
    for name, M in (("X", X), ("Y", Y)):
        if not isinstance(M, np.ndarray) or M.ndim != 2:
            raise TypeError(f"{name} must be a 2-D numpy array")
    check_data_shapes(X, Y, dims)
    arrays = [("X", X), ("Y", Y)] + [(f"W_{i}", W) for i, W in enumerate(weights, start=1)]
    dtype = common_dtype(arrays, dtype)
    for name, M in arrays:
        check_finite(M, name)
    return dims, dtype


def check_lr(lr) -> float:
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"lr must be a real number, got {lr!r}")
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be finite and > 0, got {lr}")
    return float(lr)


def check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"steps must be an int, got {steps!r}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    return int(steps)


def normalize_layer(W, d_out, out) -> None:
    """out = W / sqrt(d_out), computed in float64 and stored in out's dtype (one pass, no temporary)."""
    np.divide(W, math.sqrt(d_out), out=out, dtype=np.float64, casting="same_kind")


def each_layer(fn, count: int, nbytes: int) -> list:
    """[fn(k) for k in range(count)], on all of Numba's threads when ``nbytes`` (what they touch) is large.

    For elementwise NumPy work on layers, which releases the GIL: the
    threads take layers k = t, t + T, ... (``tuning.HOST_THREADS_MIN_BYTES``).
    An exception is raised here.
    """
    from .kernels.tuning import HOST_THREADS_MIN_BYTES

    T = 1
    if nbytes >= HOST_THREADS_MIN_BYTES and count > 1:
        import numba

        T = min(count, numba.get_num_threads())
    if T == 1:
        return [fn(k) for k in range(count)]
    from .kernels.cpu.threads import run_on_threads

    out = [None] * count

    def work(t):
        for k in range(t, count, T):
            out[k] = fn(k)

    run_on_threads(T, work)
    return out


def normalize_into(weights, dims, out) -> None:
    """out[i-1] = V_i = W_i / sqrt(d_i) for every layer (``normalize_layer``; ``each_layer``)."""
    each_layer(lambda k: normalize_layer(weights[k], dims[k + 1], out[k]), len(out),
               sum(np.asarray(Vi).nbytes for Vi in out))


def to_normalized(weights, dims, dtype) -> list[np.ndarray]:
    """V_i = W_i / sqrt(d_i), fresh C-contiguous arrays of ``dtype``."""
    V = [np.empty(np.shape(W), dtype=dtype) for W in weights]
    normalize_into(weights, dims, V)
    return V


def to_raw(V, dims, *, in_place=False) -> list[np.ndarray]:
    """W_i = sqrt(d_i) V_i (inverse of :func:`to_normalized`), C-contiguous (``each_layer``).

    New arrays; or, with ``in_place``, each V_i that is C-contiguous and
    writable scaled where it is (for a caller that owns V and is done with
    it: no fresh memory to fault in), the others copied.
    """
    def scale(k):
        Vk, s = V[k], V[k].dtype.type(math.sqrt(dims[k + 1]))
        if in_place and Vk.flags.c_contiguous and Vk.flags.writeable:
            return np.multiply(Vk, s, out=Vk)
        return np.multiply(Vk, s, order="C")

    return each_layer(scale, len(V), sum(Vi.nbytes for Vi in V))


def layer_rates(lr: float, dims) -> np.ndarray:
    """Per-layer GD rates on V_i: eta_i = lr / d_i."""
    return np.array([lr / d for d in dims[1:]], dtype=np.float64)


def theorem_lr(X, depth, dy) -> float:
    """Learning rate of Theorem 4.1: eta = d_y / (2 L ||X||_2^2) (spectral norm)."""
    depth = check_positive_int(depth, "depth")
    dy = check_positive_int(dy, "dy")
    if not isinstance(X, np.ndarray) or X.ndim != 2:
        raise TypeError("X must be a 2-D numpy array")
    check_finite(X, "X")
    sigma = np.linalg.norm(np.asarray(X, dtype=np.float64), 2)
    if sigma == 0:
        raise ValueError("X is zero: the Theorem 4.1 rate is undefined")
    return dy / (2.0 * depth * sigma**2)
