"""Kernels for nonlinear chains (tanh nets in the standard parametrization): one module per backend, same names.

The model, in the standard parametrization: z_i = W_i h_{i-1} + b_i,
h_i = phi(z_i) for i < L, f = z_L, with h_0 = x (samples are columns). The
objective of a step is the MEAN per-example loss over its batch of B
samples, l = (1/B) sum_j l_j, with l_j = 1/2 ||f(x_j) - y_j||^2 (``MSE``) or
l_j = -log softmax(f(x_j))_{label_j} (``CROSS_ENTROPY``, y_j one-hot), and
the step is W_i <- W_i - lr dl/dW_i, b_i <- b_i - lr dl/db_i.

Every backend module (``reference``, ``cpu``) exposes

* ``init_state(weights, biases, X, Y, setup)``: copy the weights W_1..W_L
  and biases b_1..b_L (lists of C-contiguous arrays of one dtype), the data
  X (d_0 x n) and Y (d_L x n) and a :class:`Setup`; draw the first batch
  and return a state holding the objective on it as ``state.loss0``.
* ``run_steps(state, loss_out)``: run up to ``len(loss_out)`` steps. Step t
  updates the weights with the gradient on batch t, draws batch t+1 and
  writes the objective of the new weights on it into ``loss_out``
  (float64). Stops after a non-finite objective (DIVERGED). Returns
  ``(steps_done, status)``.
* ``accuracy(state, X, labels)``: the fraction of the columns of X whose
  largest output is at ``labels`` (int64, one per column), with the current
  weights.
* ``weights(state)``, ``biases(state)``: the current W_i and b_i, as new arrays.

Batches of a minibatch run are drawn by :mod:`.batches`, one compiled
generator that every backend calls, so all backends train on the same
batches bit for bit.
"""

from typing import NamedTuple

from .. import COMPLETED, DIVERGED

ACTIVATIONS = {"linear": 0, "tanh": 1, "relu": 2}
LINEAR, TANH, RELU = ACTIVATIONS["linear"], ACTIVATIONS["tanh"], ACTIVATIONS["relu"]
LOSSES = {"mse": 0, "cross_entropy": 1}
MSE, CROSS_ENTROPY = LOSSES["mse"], LOSSES["cross_entropy"]

__all__ = ["ACTIVATIONS", "COMPLETED", "CROSS_ENTROPY", "DIVERGED", "LINEAR", "LOSSES", "MSE", "RELU",
           "Setup", "TANH"]


class Setup(NamedTuple):
    """What a training run does, as the kernels take it.

    activation, loss : integer codes (ACTIVATIONS, LOSSES): plain integers, so
        that a compiled kernel specializes per dtype only.
    lr : the learning rate.
    batch_size : samples per step B; 0 means full batch (B = n, no draws).
    seed : state of the batch generator (``batches.seed_state``).
    train_biases : False for a net without biases (b_i = 0, never updated).
    """

    activation: int
    loss: int
    lr: float
    batch_size: int
    seed: int
    train_biases: bool
