"""Utilities around training: datasets and batching (``lucid.utils.data``)."""

from . import data

__all__ = ["data"]
