"""fastlin: fast full-batch GD for deep linear networks, orthogonal vs Gaussian init.

Public API::

    paper_data, network_dims, init_weights, haar_orthogonal, theorem_lr,
    train, train_batch, TrainResult, Chains, prepare, available_backends
    init_mlp, train_mlp, MLPResult, digits          (nonlinear chains)

    ntk: the NTK Θ(t) of the GD dynamics (fastlin.ntk.factors, gram, eigs, ...)

Importing fastlin needs no GPU and compiles nothing; kernels load on first
use (or at ``prepare``).
"""

from . import ntk
from .data import digits
from .init import haar_orthogonal, init_weights, network_dims, paper_data
from .kernels import available_backends
from .mlp import MLPResult, init_mlp, train_mlp
from .model import theorem_lr
from .train import Chains, TrainResult, prepare, train, train_batch

__version__ = "0.1.0"

__all__ = [
    "Chains",
    "MLPResult",
    "TrainResult",
    "available_backends",
    "digits",
    "haar_orthogonal",
    "init_mlp",
    "init_weights",
    "network_dims",
    "ntk",
    "paper_data",
    "prepare",
    "theorem_lr",
    "train",
    "train_batch",
    "train_mlp",
]
