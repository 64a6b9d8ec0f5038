"""fastlin: fast full-batch GD for deep linear networks, orthogonal vs Gaussian init.

Public API::

    haar_orthogonal, init_weights, network_dims, paper_data, theorem_lr,
    train, train_batch, TrainResult, Chains,
    init_mlp, train_mlp, MLPResult, digits          (nonlinear chains)

Importing fastlin needs no GPU and compiles nothing; kernels load on first use.
"""

from .data import digits
from .init import haar_orthogonal, init_weights, network_dims, paper_data
from .mlp import MLPResult, init_mlp, train_mlp
from .model import theorem_lr
from .train import BACKENDS, Chains, TrainResult, train, train_batch

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "Chains",
    "MLPResult",
    "TrainResult",
    "digits",
    "haar_orthogonal",
    "init_mlp",
    "init_weights",
    "network_dims",
    "paper_data",
    "theorem_lr",
    "train",
    "train_batch",
    "train_mlp",
]
