"""Optimizers: one base class that owns the compiled step, and small pure update rules."""

from .adagrad import Adagrad
from .optimizer import Optimizer

__all__ = ["Optimizer", "Adagrad"]
