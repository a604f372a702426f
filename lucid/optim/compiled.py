"""The compiled group steps, their cache, and the watch for a compiler that is missing.

A group's step is a pure function over lists of ``mx.array`` s (parameters, gradients,
states, per-step hyperparameters) that calls the optimizer's rule once per parameter or
bucket. ``mx.compile`` keys its cache on the structure of the inputs (count, shapes,
dtypes); each distinct ``static_config`` (the flags that change the graph) gets its own
compiled function. Hyperparameters are inputs, so new values never retrace.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import mlx.core as mx

from .kernels import spread

__all__ = ["CompiledSteps", "dense_group_step"]

_warned_no_compile = False  # the no-compiler warning is given once per process

Job = tuple[mx.array, mx.array, dict[str, mx.array], dict[str, mx.array]]


def dense_group_step(jobs: list[Job], *, rule: Callable, **static: Any) -> list[tuple]:
    """``rule(param, grad, state, hyper, **static)`` on every job, the jobs spread over the
    streams (largest first); runs in Python only while ``mx.compile`` traces it."""
    results: list[Any] = [None] * len(jobs)
    for stream, indices in spread([job[0].size for job in jobs]):
        with mx.stream(stream):
            for i in indices:
                p, g, s, h = jobs[i]
                results[i] = rule(p, g, s, h, **static)
    return results


class CompiledSteps:
    """One optimizer's compiled group steps and its trace count."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.trace_count = 0  # how many times a step function has been traced
        self._fns: dict[tuple, Callable] = {}
        self._traces_of: dict[tuple, int] = {}

    def call(self, pure: Callable, static: dict[str, Any], *args: Any) -> Any:
        """``pure(*args, **static)`` through its compiled version (made on first use)."""
        key = (pure.__name__, *sorted(static.items()))
        fn = self._fns.get(key)
        if fn is None:
            fn = self._fns[key] = mx.compile(partial(self._counted, pure, **static))
        before = self.trace_count
        out = fn(*args)
        if self.trace_count != before:
            self._note_trace(key, args)
        return out

    def _counted(self, pure: Callable, *args: Any, **static: Any) -> Any:
        self.trace_count += 1
        return pure(*args, **static)

    def _note_trace(self, key: tuple, args: tuple) -> None:
        """Warn once per process when ``mx.compile`` retraces an unchanged structure.

        Without a C++ compiler (``g++``) on PATH, MLX's CPU backend silently stops
        compiling: results stay right, but every call retraces and nothing is fused.
        MLX may trace a new function twice before caching it, so a third trace of the
        same structure is the signal.
        """
        structure = (key, _structure(args))
        self._traces_of[structure] = n = self._traces_of.get(structure, 0) + 1
        global _warned_no_compile
        if n >= 3 and not _warned_no_compile:
            _warned_no_compile = True
            warnings.warn(
                f"mx.compile is not compiling: {self.owner}'s step was traced {n} "
                "times for the same parameters. On MLX's CPU backend this happens when no "
                "C++ compiler (g++) is on PATH. Steps stay correct but run unfused and "
                "retrace every call; install g++ to fix it.",
                RuntimeWarning,
                stacklevel=5,
            )


def _structure(tree: Any) -> Any:
    """Shapes and dtypes (as strings, so the key can be copied) of every array in ``tree``."""
    if isinstance(tree, mx.array):
        return (tuple(tree.shape), str(tree.dtype))
    if isinstance(tree, dict):
        return tuple((k, _structure(v)) for k, v in sorted(tree.items()))
    if isinstance(tree, (list, tuple)):
        return tuple(_structure(v) for v in tree)
    return repr(tree)
