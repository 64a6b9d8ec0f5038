"""Plain NumPy reference for nonlinear chains: the textbook forward and backward pass.

Forward: h_0 = X_B (the batch's columns), z_i = W_i h_{i-1} + b_i,
h_i = phi(z_i) (i < L), f = z_L. Backward: delta_L = dl/df (mean over the
batch), dl/dW_i = delta_i h_{i-1}^T, dl/db_i = delta_i 1,
delta_{i-1} = phi'(z_{i-1}) * (W_i^T delta_i); all gradients first, then
every layer's update. Clear rather than fast: the ground truth of the
compiled backends and of the central-difference test.
"""

from __future__ import annotations

import math

import numpy as np

from . import COMPLETED, CROSS_ENTROPY, DIVERGED, LINEAR, MSE, RELU, TANH, Setup
from .batches import draw_batch, seed_state


def activation(z, code):
    """phi(z) for an activation code."""
    if code == TANH:
        return np.tanh(z)
    if code == RELU:
        return np.where(z <= 0, np.zeros_like(z), z)  # NaN stays NaN: divergence must show
    if code == LINEAR:
        return z
    raise ValueError(f"unknown activation code {code}")


def activation_slope(h, code):
    """phi'(z) written through h = phi(z): 1 - h^2 (tanh), [h > 0] (relu), 1 (linear)."""
    if code == TANH:
        return 1 - h * h
    if code == RELU:
        return (h > 0).astype(h.dtype)
    if code == LINEAR:
        return np.ones_like(h)
    raise ValueError(f"unknown activation code {code}")


def forward(weights, biases, X, act):
    """[h_0, ..., h_{L-1}] and f = z_L for the columns of X."""
    hs = [X]
    for i, (W, b) in enumerate(zip(weights, biases)):
        z = W @ hs[-1] + b[:, None]
        if i == len(weights) - 1:
            return hs, z
        hs.append(activation(z, act))
    raise ValueError("no layers")


def objective(f, Y, loss):
    """(l, dl/df): l = the mean per-example loss in float64, dl/df = delta_L in f's dtype.

    cross_entropy: l_j = logsumexp(f_j) - y_j . f_j (y_j one-hot), dl/df_j = (softmax(f_j) - y_j) / B.
    mse: l_j = 1/2 ||f_j - y_j||^2, dl/df_j = (f_j - y_j) / B.
    """
    B = f.shape[1]
    if loss == CROSS_ENTROPY:
        top = f.max(axis=0)
        lse = top + np.log(np.exp(f - top).sum(axis=0))
        per_example = lse - (Y * f).sum(axis=0)
        grad = (np.exp(f - lse) - Y) / f.dtype.type(B)
    elif loss == MSE:
        E = f - Y
        E64 = E.astype(np.float64)  # a float32 residual past 1.8e19 squares to inf in float32
        per_example = 0.5 * (E64 * E64).sum(axis=0)
        grad = E / f.dtype.type(B)
    else:
        raise ValueError(f"unknown loss code {loss}")
    return float(np.sum(per_example.astype(np.float64))) / B, grad


def gradients(weights, biases, X, Y, act, loss):
    """(l, [dl/dW_i], [dl/db_i]) of the mean loss over the columns of X, by backpropagation."""
    with np.errstate(over="ignore", invalid="ignore"):
        hs, f = forward(weights, biases, X, act)
        value, delta = objective(f, Y, loss)
        grad_W, grad_b = [None] * len(weights), [None] * len(weights)
        for i in range(len(weights) - 1, -1, -1):
            grad_W[i] = delta @ hs[i].T
            grad_b[i] = delta.sum(axis=1)
            if i > 0:
                delta = activation_slope(hs[i], act) * (weights[i].T @ delta)
    return value, grad_W, grad_b


class State:
    """Weights, biases, data, the batch generator and the current batch's columns."""

    def __init__(self, weights, biases, X, Y, setup: Setup):
        self.W = [np.array(W) for W in weights]
        self.b = [np.array(b) for b in biases]
        self.X, self.Y = X, Y
        self.setup = setup
        self.lr = X.dtype.type(setup.lr)
        self.perm = np.arange(X.shape[1], dtype=np.int64)
        self.rng = seed_state(setup.seed)
        self.columns = self._draw()
        with np.errstate(over="ignore", invalid="ignore"):
            self.loss0 = self._objective()

    def _draw(self):
        if self.setup.batch_size == 0:
            return slice(None)
        draw_batch(self.rng, self.perm, self.setup.batch_size)
        return self.perm[:self.setup.batch_size].copy()

    def _objective(self) -> float:
        _, f = forward(self.W, self.b, self.X[:, self.columns], self.setup.activation)
        return objective(f, self.Y[:, self.columns], self.setup.loss)[0]


def init_state(weights, biases, X, Y, setup: Setup) -> State:
    return State(weights, biases, X, Y, setup)


def run_steps(state: State, loss_out):
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is a status, not a warning
        for k in range(len(loss_out)):
            s = state.setup
            _, grad_W, grad_b = gradients(state.W, state.b, state.X[:, state.columns],
                                          state.Y[:, state.columns], s.activation, s.loss)
            for W, G in zip(state.W, grad_W):
                W -= state.lr * G
            if s.train_biases:
                for b, g in zip(state.b, grad_b):
                    b -= state.lr * g
            state.columns = state._draw()
            loss_out[k] = state._objective()
            if not math.isfinite(loss_out[k]):
                return k + 1, DIVERGED
    return len(loss_out), COMPLETED


def accuracy(state: State, X, labels) -> float:
    with np.errstate(over="ignore", invalid="ignore"):
        _, f = forward(state.W, state.b, X, state.setup.activation)
    return float(np.mean(np.argmax(f, axis=0) == labels))


def weights(state: State):
    return [W.copy() for W in state.W]


def biases(state: State):
    return [b.copy() for b in state.b]
