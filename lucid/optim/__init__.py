"""Optimizers: one base class that owns the compiled step, and small pure update rules."""

from .adafactor import Adafactor
from .adagrad import Adagrad
from .adam import Adam, Adamax, AdamW, NAdam, RAdam, SparseAdam
from .lion import Lion
from .muon import Muon
from .optimizer import Optimizer
from .rmsprop import Adadelta, RMSprop
from .rprop import Rprop
from .sgd import ASGD, SGD
from .trees import param_groups
from .zero import ZeroRedundancyOptimizer

__all__ = [
    "Optimizer",
    "param_groups",
    "SGD",
    "ASGD",
    "Adagrad",
    "RMSprop",
    "Adadelta",
    "Rprop",
    "Adam",
    "AdamW",
    "SparseAdam",
    "Adamax",
    "NAdam",
    "RAdam",
    "Lion",
    "Adafactor",
    "Muon",
    "ZeroRedundancyOptimizer",
]
