"""Peer implementations of SGD on a tanh net with cross-entropy, for bench/test_bench_mlp.py.

Each peer trains fastlin's nonlinear model (fastlin/mlp.py): z_i = W_i h_{i-1} + b_i,
h_i = tanh(z_i), f = z_L, the mean cross-entropy over a batch, W <- W - lr grad,
on the same batches as fastlin (``batch_indices``, fastlin's generator). They
are written the way a competent user of each library writes them, samples
as rows (``h @ W.T + b``, torch.nn.Linear's convention):

* ``TorchPeer``: PyTorch eager autograd, all cores, the update with one
  ``torch._foreach_add_`` (as ``torch.optim.SGD(foreach=True)`` does).
* ``TorchCompiledPeer``: the same with the loss function through
  ``torch.compile`` (forward and backward graphs compiled by Inductor).
* ``JaxPeer``: ``jax.jit`` of a ``lax.scan`` over the steps, gradients
  from ``jax.value_and_grad``, the parameters donated to the compiled call.

Common interface: ``peer = Peer(weights, biases, X, labels, batches, lr)``
(batches: (steps, B) int64 sample indices, or None for full batch);
``peer.reset()`` puts the initial parameters back and restarts at batch 0;
``peer.run(k)`` takes k steps and returns the float64 losses l(t), ...,
l(t+k-1), each on its step's batch before the update.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

N_THREADS = os.cpu_count() or 1


def batch_indices(seed: int, n: int, batch: int, steps: int) -> np.ndarray:
    """The sample indices of batches 0..steps-1 as fastlin draws them (kernels/mlp/batches.py)."""
    from fastlin.kernels.mlp.batches import draw_batch, seed_state

    state, perm = seed_state(seed), np.arange(n, dtype=np.int64)
    out = np.empty((steps, batch), dtype=np.int64)
    for t in range(steps):
        draw_batch(state, perm, batch)
        out[t] = perm[:batch]
    return out


class TorchPeer:
    """PyTorch autograd, eager mode, CPU, all cores."""

    name = "torch"
    compiled = False

    def __init__(self, weights, biases, X, labels, batches, lr):
        import torch

        self.torch = torch
        torch.set_num_threads(N_THREADS)
        self.initial = [torch.from_numpy(np.array(p)) for pair in zip(weights, biases) for p in pair]
        self.params = [p.clone().requires_grad_(True) for p in self.initial]
        self.XT = torch.from_numpy(np.ascontiguousarray(X.T))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.batches = None if batches is None else torch.from_numpy(batches)
        self.lr = float(lr)
        self.loss_fn = torch.compile(self._loss, dynamic=False) if self.compiled else self._loss
        self.t = 0

    def _loss(self, params, xb, lb):
        torch = self.torch
        h = xb
        for i in range(0, len(params), 2):
            h = torch.addmm(params[i + 1], h, params[i].T)
            if i + 2 < len(params):
                h = torch.tanh(h)
        return torch.nn.functional.cross_entropy(h, lb)

    def reset(self):
        with self.torch.no_grad():
            for p, p0 in zip(self.params, self.initial):
                p.copy_(p0)
        self.t = 0

    def run(self, k: int) -> np.ndarray:
        torch = self.torch
        losses = torch.empty(k, dtype=torch.float64)
        for s in range(k):
            if self.batches is None:
                xb, lb = self.XT, self.labels
            else:
                idx = self.batches[self.t]
                xb, lb = self.XT[idx], self.labels[idx]
            loss = self.loss_fn(self.params, xb, lb)
            grads = torch.autograd.grad(loss, self.params)
            with torch.no_grad():
                torch._foreach_add_(self.params, grads, alpha=-self.lr)
            losses[s] = loss.detach()
            self.t += 1
        return losses.numpy()


class TorchCompiledPeer(TorchPeer):
    """PyTorch with the loss (forward and its backward) compiled by ``torch.compile``."""

    name = "torch-compile"
    compiled = True


class JaxPeer:
    """JAX: one ``jit``-compiled ``lax.scan`` over k steps (compiled once per k)."""

    name = "jax"

    def __init__(self, weights, biases, X, labels, batches, lr):
        import jax

        jax.config.update("jax_enable_x64", True)
        self.jax = jax
        self.initial = [np.array(p) for pair in zip(weights, biases) for p in pair]
        self.XT = jax.device_put(np.ascontiguousarray(X.T))
        self.labels = jax.device_put(np.asarray(labels, dtype=np.int64))
        self.batches = batches
        self.lr = float(lr)  # weakly typed: float32 parameters stay float32
        self.compiled = {}
        self.reset()

    def reset(self):
        # A fresh copy each time: the compiled call donates (overwrites) it.
        self.params = tuple(self.jax.numpy.array(p, copy=True) for p in self.initial)
        self.t = 0

    def _scan(self, k: int):
        if k not in self.compiled:
            jax = self.jax
            jnp = jax.numpy
            lr, XT, labels, full = self.lr, self.XT, self.labels, self.batches is None

            def loss_fn(params, xb, lb):
                h = xb
                for i in range(0, len(params), 2):
                    h = h @ params[i].T + params[i + 1]
                    if i + 2 < len(params):
                        h = jnp.tanh(h)
                lse = jax.nn.logsumexp(h, axis=1)
                return jnp.mean(lse - jnp.take_along_axis(h, lb[:, None], axis=1)[:, 0])

            def step(params, idx):
                xb, lb = (XT, labels) if full else (XT[idx], labels[idx])
                loss, grads = jax.value_and_grad(loss_fn)(params, xb, lb)
                return tuple(p - lr * g for p, g in zip(params, grads)), loss

            def run(params, idxs):
                return jax.lax.scan(step, params, idxs, length=k)

            self.compiled[k] = jax.jit(run, donate_argnums=0)
        return self.compiled[k]

    def run(self, k: int) -> np.ndarray:
        idxs = None if self.batches is None else self.batches[self.t:self.t + k]
        self.params, losses = self._scan(k)(self.params, idxs)
        losses.block_until_ready()
        self.t += k
        return np.asarray(losses, dtype=np.float64)


PEERS = {"torch": TorchPeer, "torch-compile": TorchCompiledPeer, "jax": JaxPeer}
_MODULE_OF = {"torch": "torch", "torch-compile": "torch", "jax": "jax"}


def available(name: str) -> bool:
    """Whether peer ``name`` can run here (its library is importable)."""
    return importlib.util.find_spec(_MODULE_OF[name]) is not None
