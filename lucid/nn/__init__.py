"""Neural-network building blocks: Parameter, Module, layers and losses."""

from . import utils
from .parameter import Parameter

__all__ = ["Parameter"]
