"""Independent, autograd-free computations in the paper's raw parametrization.

These use the explicit alpha = prod_i d_i^(-1/2), so they only work at small
depth; they check fastlin's normalized-form code from the outside. Also
small tools the tests share: threads, random problems, loading bench/ scripts.
"""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).parents[1] / "bench"


def alpha(dims):
    return math.prod(d ** -0.5 for d in dims[1:])


def product(Ws, start, stop, size):
    """W_stop ... W_start (1-based, inclusive); identity of ``size`` when empty."""
    P = np.eye(size)
    for W in Ws[start - 1:stop]:
        P = W @ P
    return P


def direct_loss(Ws, X, Y):
    dims = [X.shape[0]] + [W.shape[0] for W in Ws]
    E = alpha(dims) * product(Ws, 1, len(Ws), X.shape[0]) @ X - Y
    return 0.5 * np.sum(E**2)


def direct_grads(Ws, X, Y):
    """dl/dW_i = alpha (W_L...W_{i+1})^T E (W_{i-1}...W_1 X)^T."""
    L = len(Ws)
    dims = [X.shape[0]] + [W.shape[0] for W in Ws]
    a = alpha(dims)
    E = a * product(Ws, 1, L, dims[0]) @ X - Y
    return [a * product(Ws, i + 1, L, dims[i]).T @ E @ (product(Ws, 1, i - 1, dims[0]) @ X).T
            for i in range(1, L + 1)]


def direct_gd(Ws, X, Y, lr, steps):
    """Plain GD on the raw weights; returns (loss history, final weights)."""
    Ws = [W.astype(np.float64).copy() for W in Ws]
    losses = [direct_loss(Ws, X, Y)]
    for _ in range(steps):
        grads = direct_grads(Ws, X, Y)
        Ws = [W - lr * G for W, G in zip(Ws, grads)]
        losses.append(direct_loss(Ws, X, Y))
    return np.array(losses), Ws


def rel_err(a, b):
    """Largest entry-wise difference relative to the largest entry of ``b``.

    Entry-wise rtol fails on entries that cancel to near zero (one such entry
    of 8.6e-5 in a matrix of O(1) entries differed by 1.3e-12 relative), so
    kernels are compared to their reference at the array's scale.
    """
    return np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b))


def random_problem(rng, dims, n, init="gaussian", dtype=np.float64):
    import fastlin

    Ws = fastlin.init_weights(dims, init, rng=rng, dtype=dtype)
    X = rng.standard_normal((dims[0], n)).astype(dtype)
    Y = rng.standard_normal((dims[-1], n)).astype(dtype)
    return Ws, X, Y


def run_in_threads(fn, count):
    """[fn(0), ..., fn(count - 1)], each called in its own Python thread, all at once."""
    import threading

    out = [None] * count
    workers = [threading.Thread(target=lambda i=i: out.__setitem__(i, fn(i))) for i in range(count)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return out


def load_bench(name):
    """bench/NAME.py (NAME may be "investigations/x") imported as the module bench_<x>.

    bench/ and bench/investigations/ go on sys.path for the scripts' own imports.
    """
    for folder in (BENCH / "investigations", BENCH):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(f"bench_{Path(name).name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
