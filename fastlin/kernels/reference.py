"""Plain NumPy reference: the ground truth every other backend is tested against.

Textbook full-batch GD on the normalized weights V_i = W_i / sqrt(d_i)
(docs/design.md): forward prefix chains, backward suffix chains, then
V_i <- V_i - eta_i B_i^T E A_i^T for every layer. Clear rather than fast.
"""

from __future__ import annotations

import math

import numpy as np

from . import COMPLETED, CONVERGED, DIVERGED


def prefix_chain(V, X):
    """[A_1, ..., A_{L+1}] with A_1 = X and A_{i+1} = V_i A_i (A_{L+1} = f(X))."""
    A = [X]
    for Vi in V:
        A.append(Vi @ A[-1])
    return A


def suffix_chain(V):
    """[B_0, ..., B_L] with B_L = I and B_{i-1} = B_i V_i (B_0 = V_L ... V_1)."""
    dy = V[-1].shape[0]
    B = [np.eye(dy, dtype=V[-1].dtype)]
    for Vi in reversed(V):
        B.append(B[-1] @ Vi)
    return B[::-1]


def half_squared_norm(E) -> float:
    """loss = 1/2 ||E||_F^2, accumulated in float64."""
    E64 = np.asarray(E, dtype=np.float64)
    return 0.5 * float(np.vdot(E64, E64))


def gradient_terms(A, B, E):
    """dl/dV_i = B_i^T E A_i^T for i = 1..L, each formed through its rank-min(n, dy) factors."""
    grads = []
    n, dy = E.shape[1], E.shape[0]
    for i in range(1, len(A)):
        if dy <= n:
            grads.append(B[i].T @ (E @ A[i - 1].T))
        else:
            grads.append((B[i].T @ E) @ A[i - 1].T)
    return grads


def gradients(V, X, Y):
    """Loss and gradients dl/dV_i of l = 1/2 ||V_L...V_1 X - Y||_F^2."""
    A = prefix_chain(V, X)
    E = A[-1] - Y
    return half_squared_norm(E), gradient_terms(A, suffix_chain(V), E)


class State:
    """Reference training state: weights, data, rates and the current A, E."""

    def __init__(self, V, X, Y, eta):
        self.V = list(V)
        self.X, self.Y = X, Y
        self.eta = [V[0].dtype.type(e) for e in eta]
        self.A = prefix_chain(self.V, X)
        self.E = self.A[-1] - Y
        self.loss0 = half_squared_norm(self.E)


def init_state(V, X, Y, eta) -> State:
    return State(V, X, Y, eta)


def run_steps(state: State, loss_out, loss_stop: float):
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is a status, not a warning
        return _run_steps(state, loss_out, loss_stop)


def _run_steps(state: State, loss_out, loss_stop: float):
    for k in range(len(loss_out)):
        grads = gradient_terms(state.A, suffix_chain(state.V), state.E)
        for Vi, Gi, eta_i in zip(state.V, grads, state.eta):
            Vi -= eta_i * Gi
        state.A = prefix_chain(state.V, state.X)
        state.E = state.A[-1] - state.Y
        loss = half_squared_norm(state.E)
        loss_out[k] = loss
        if not math.isfinite(loss):
            return k + 1, DIVERGED
        if loss <= loss_stop:
            return k + 1, CONVERGED
    return len(loss_out), COMPLETED


def weights(state: State):
    return list(state.V)


def chains(state: State):
    return [a.copy() for a in state.A], suffix_chain(state.V), state.E.copy()


def prepare(dtype="float64") -> None:
    """Nothing to compile: the reference is plain NumPy."""
