"""Neural-network building blocks: Parameter, Module, containers, layers and losses.

``lucid.nn.functional`` holds the stateless functions and ``lucid.nn.init`` the
initialisation schemes, ``lucid.nn.utils`` gradient clipping, ``lucid.nn.parallel``
data-parallel training (:class:`~lucid.nn.parallel.DistributedDataParallel`).
"""

from . import functional, init, parallel, utils
from .activation import GELU, ReLU, Sigmoid, Tanh
from .containers import ModuleDict, ModuleList, Sequential
from .dropout import Dropout
from .embedding import Embedding
from .flatten import Flatten
from .linear import Identity, Linear
from .losses import BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss
from .module import Module
from .normalization import LayerNorm
from .parameter import Parameter

__all__ = [
    "Parameter",
    "Module",
    "Sequential",
    "ModuleList",
    "ModuleDict",
    "Linear",
    "Embedding",
    "Identity",
    "Flatten",
    "ReLU",
    "Tanh",
    "Sigmoid",
    "GELU",
    "Dropout",
    "LayerNorm",
    "MSELoss",
    "L1Loss",
    "CrossEntropyLoss",
    "BCEWithLogitsLoss",
    "functional",
    "init",
    "utils",
    "parallel",
]
