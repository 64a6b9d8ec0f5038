"""fastlin: fast full-batch GD for deep linear networks, orthogonal vs Gaussian init.

Public API::

    paper_data, network_dims, init_weights, haar_orthogonal, theorem_lr,
    train, train_batch, TrainResult, Chains, prepare, available_backends

    ntk: the NTK Θ(t) of the GD dynamics (fastlin.ntk.factors, gram, eigs, ...)

Importing fastlin needs no GPU and compiles nothing; kernels load on first
use (or at ``prepare``).
"""

from . import ntk
from .init import haar_orthogonal, init_weights, network_dims, paper_data
from .kernels import available_backends
from .model import theorem_lr
from .train import Chains, TrainResult, prepare, train, train_batch

__version__ = "0.1.0"

__all__ = [
    "Chains",
    "TrainResult",
    "available_backends",
    "haar_orthogonal",
    "init_weights",
    "network_dims",
    "ntk",
    "paper_data",
    "prepare",
    "theorem_lr",
    "train",
    "train_batch",
]
