"""Optimizers: one base class that owns the compiled step, and small pure update rules."""

__all__: list[str] = []
