"""Real data for nonlinear chains, offline: scikit-learn's bundled digits (no download)."""

from __future__ import annotations

import numbers

import numpy as np

from .init import as_generator
from .model import check_dtype


def one_hot(labels, classes: int, dtype=np.float64) -> np.ndarray:
    """Y (classes x n) with Y[labels[j], j] = 1."""
    labels = np.asarray(labels, dtype=np.int64)
    Y = np.zeros((classes, labels.size), dtype=dtype)
    Y[labels, np.arange(labels.size)] = 1
    return Y


def digits(test_size=360, rng=0, dtype=np.float64):
    """scikit-learn's digits (1797 images of 8 x 8 pixels, 10 classes), split and standardized.

    A random split (seeded by ``rng``) leaves ``test_size`` samples for
    testing; every pixel is standardized with the training split's mean and
    standard deviation (pixels constant on it are only centred). Samples are
    columns, as everywhere in fastlin.

    Returns ``(X_train, Y_train, X_test, Y_test)``: X of shape (64, n), Y
    one-hot of shape (10, n); n = 1797 - test_size for training.
    """
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    total = labels.size
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Integral):
        raise TypeError(f"test_size must be an int, got {test_size!r}")
    if not 0 <= test_size < total:
        raise ValueError(f"test_size must be in [0, {total - 1}], got {test_size}")
    dtype = check_dtype(dtype)
    order = as_generator(rng).permutation(total)
    train, test = order[test_size:], order[:test_size]
    mean = images[train].mean(axis=0)
    std = images[train].std(axis=0)
    std[std == 0] = 1.0
    X = ((images - mean) / std).T
    classes = int(labels.max()) + 1
    return (np.ascontiguousarray(X[:, train], dtype=dtype), one_hot(labels[train], classes, dtype),
            np.ascontiguousarray(X[:, test], dtype=dtype), one_hot(labels[test], classes, dtype))
