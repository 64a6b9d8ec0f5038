"""Peer implementations of full-batch GD on a deep linear net, for the benchmarks.

Each peer trains the normalized form of docs/design.md: f = V_L ... V_1 X,
loss l = 1/2 ||f - Y||_F^2, and one GD step V_i <- V_i - eta_i dl/dV_i with
dl/dV_i = B_i^T E A_i^T and eta_i = lr / d_i. They are written the way a
competent user of each library would write them, so that the ratio to
fastlin is an honest one:

* ``NumpyPeer``: manual backprop with preallocated buffers (forward prefix
  chain, downward suffix chain using the old V_i, and the rank-dy update
  through one reused m x m buffer; no list of L gradients is ever stored).
  Only NumPy's BLAS is called: mixing in SciPy's (a second OpenBLAS with its
  own spinning thread pool) made a step 25x slower on 2 cores.
* ``TorchPeer``: PyTorch autograd, eager, one Python iteration per step.
* ``JaxPeer``: JAX ``jit`` of ``lax.scan`` over the steps, gradients from
  ``jax.value_and_grad``, weights donated to the compiled call.

Common interface: ``peer = Peer(V, X, Y, eta)`` copies the weights;
``peer.reset()`` puts the initial weights back; ``peer.run(k)`` takes k steps
and returns the float64 array of the losses l(t), ..., l(t+k-1) evaluated
during those steps (each step's forward pass sees the weights before its
update). ``available()`` lists the peers importable here.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

import fastlin
from fastlin.model import layer_rates, to_normalized

N_THREADS = os.cpu_count() or 1


def make_problem(depth, width, dtype, *, init="orthogonal", seed=0):
    """The benchmark problem: paper data (X 1024 x 16, Y 10 x 16), normalized weights, rates.

    Returns ``(V, X, Y, eta)``: V_1..V_L = W_i / sqrt(d_i) as C-contiguous
    arrays of ``dtype``, and eta_i = lr / d_i with the Theorem 4.1 rate
    lr = d_y / (2 L ||X||_2^2).
    """
    dtype = np.dtype(dtype)
    X, Y = fastlin.paper_data(rng=seed, dtype=dtype)
    dims = fastlin.network_dims(depth, width, X.shape[0], Y.shape[0])
    W = fastlin.init_weights(dims, init, rng=seed + 1, dtype=np.float64)
    V = to_normalized(W, dims, dtype)
    lr = fastlin.theorem_lr(X, depth, Y.shape[0])
    return V, X, Y, layer_rates(lr, dims)


def _loss64(E) -> float:
    """1/2 ||E||_F^2 accumulated in float64, as fastlin's reference does."""
    E64 = np.asarray(E, dtype=np.float64)
    return 0.5 * float(np.vdot(E64, E64))


class NumpyPeer:
    """Manual backprop in NumPy with preallocated buffers."""

    name = "numpy"

    def __init__(self, V, X, Y, eta):
        dtype = X.dtype
        self.V0 = [np.array(Vi, dtype=dtype, order="C") for Vi in V]
        self.V = [Vi.copy() for Vi in self.V0]
        self.X, self.Y = X, Y
        self.eta = [dtype.type(e) for e in eta]
        n, dy = X.shape[1], Y.shape[0]
        dims = [X.shape[0]] + [Vi.shape[0] for Vi in V]
        # A[j] = A_{j+1} (A[0] = X, A[L] = f); B[j] = B_j (B[L] = I).
        self.A = [X] + [np.empty((d, n), dtype) for d in dims[1:]]
        self.B = [np.empty((dy, d), dtype) for d in dims[:-1]] + [np.eye(dy, dtype=dtype)]
        self.E = np.empty((dy, n), dtype)
        self.EA = [np.empty((dy, d), dtype) for d in dims[:-1]]
        # One update buffer per layer shape (all hidden layers share one).
        self.update = {Vi.shape: np.empty(Vi.shape, dtype) for Vi in V}

    def reset(self):
        for Vi, V0i in zip(self.V, self.V0):
            np.copyto(Vi, V0i)

    def step(self) -> float:
        V, A, B, E = self.V, self.A, self.B, self.E
        for j, Vj in enumerate(V):
            np.matmul(Vj, A[j], out=A[j + 1])
        np.subtract(A[-1], self.Y, out=E)
        loss = _loss64(E)
        for j in range(len(V), 0, -1):
            Vj = V[j - 1]
            if j > 1:
                np.matmul(B[j], Vj, out=B[j - 1])  # B_{j-1} = B_j V_j with the old V_j
            # eta_j E A_j^T (dy x d_{j-1}, small), then V_j -= B_j^T (eta_j E A_j^T)
            EA = np.matmul(E, A[j - 1].T, out=self.EA[j - 1])
            EA *= self.eta[j - 1]
            step = np.matmul(B[j].T, EA, out=self.update[Vj.shape])
            np.subtract(Vj, step, out=Vj)
        return loss

    def run(self, k: int) -> np.ndarray:
        return np.array([self.step() for _ in range(k)])


class TorchPeer:
    """PyTorch autograd, eager mode, CPU, all cores."""

    name = "torch"

    def __init__(self, V, X, Y, eta):
        import torch

        self.torch = torch
        torch.set_num_threads(N_THREADS)
        self.V0 = [torch.from_numpy(np.array(Vi)) for Vi in V]
        self.V = [V0i.clone().requires_grad_(True) for V0i in self.V0]
        self.X, self.Y = torch.from_numpy(np.array(X)), torch.from_numpy(np.array(Y))
        self.eta = [float(e) for e in eta]

    def reset(self):
        with self.torch.no_grad():
            for Vi, V0i in zip(self.V, self.V0):
                Vi.copy_(V0i)

    def run(self, k: int) -> np.ndarray:
        torch = self.torch
        losses = torch.empty(k, dtype=torch.float64)
        for t in range(k):
            f = self.X
            for Vi in self.V:
                f = Vi @ f
            loss = 0.5 * (f - self.Y).square().sum()
            grads = torch.autograd.grad(loss, self.V)
            with torch.no_grad():
                for Vi, Gi, eta_i in zip(self.V, grads, self.eta):
                    Vi.sub_(Gi, alpha=eta_i)
            losses[t] = loss.detach()
        return losses.numpy()


class JaxPeer:
    """JAX: one ``jit``-compiled ``lax.scan`` over k steps (compiled once per k)."""

    name = "jax"

    def __init__(self, V, X, Y, eta):
        import jax

        jax.config.update("jax_enable_x64", True)
        self.jax = jax
        self.V0 = [np.array(Vi) for Vi in V]
        self.X, self.Y = jax.device_put(X), jax.device_put(Y)
        # Python floats are weakly typed: float32 weights stay float32.
        self.eta = tuple(float(e) for e in eta)
        self.compiled = {}
        self.reset()

    def reset(self):
        # A fresh copy each time: the compiled call donates (overwrites) it.
        self.V = tuple(self.jax.numpy.array(V0i, copy=True) for V0i in self.V0)

    def _scan(self, k: int):
        if k not in self.compiled:
            jax = self.jax
            jnp = jax.numpy
            eta = self.eta

            def loss_fn(V, X, Y):
                f = X
                for Vi in V:
                    f = Vi @ f
                E = f - Y
                return 0.5 * jnp.sum(E * E)

            def step(V, X, Y):
                loss, grads = jax.value_and_grad(loss_fn)(V, X, Y)
                return tuple(Vi - eta_i * Gi for Vi, Gi, eta_i in zip(V, grads, eta)), loss

            def run(V, X, Y):
                return jax.lax.scan(lambda V, _: step(V, X, Y), V, None, length=k)

            self.compiled[k] = jax.jit(run, donate_argnums=0)
        return self.compiled[k]

    def run(self, k: int) -> np.ndarray:
        self.V, losses = self._scan(k)(self.V, self.X, self.Y)
        losses.block_until_ready()
        return np.asarray(losses, dtype=np.float64)


PEERS = {"numpy": NumpyPeer, "torch": TorchPeer, "jax": JaxPeer}
_MODULE_OF = {"numpy": "numpy", "torch": "torch", "jax": "jax"}


def available(name: str) -> bool:
    """Whether peer ``name`` can run here (its library is importable)."""
    return importlib.util.find_spec(_MODULE_OF[name]) is not None


def reference_losses(V, X, Y, eta, k: int) -> np.ndarray:
    """l(0), ..., l(k-1) from fastlin's NumPy reference kernel: the ground truth for peers."""
    from fastlin.kernels import reference

    state = reference.init_state([np.array(Vi) for Vi in V], X, Y, eta)
    out = np.empty(k)
    out[0] = state.loss0
    if k > 1:
        reference.run_steps(state, out[1:], -np.inf)
    return out
