"""fastlin: fast full-batch GD for deep linear networks, orthogonal vs Gaussian init.

Public API::

    haar_orthogonal, init_weights, network_dims, paper_data, theorem_lr,
    train, train_batch, TrainResult, Chains

    ntk: the NTK Θ(t) of the GD dynamics (fastlin.ntk.factors, gram, eigs, ...)

Importing fastlin needs no GPU and compiles nothing; kernels load on first use.
"""

from . import ntk
from .init import haar_orthogonal, init_weights, network_dims, paper_data
from .model import theorem_lr
from .train import BACKENDS, Chains, TrainResult, train, train_batch

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "Chains",
    "TrainResult",
    "haar_orthogonal",
    "init_weights",
    "network_dims",
    "ntk",
    "paper_data",
    "theorem_lr",
    "train",
    "train_batch",
]
