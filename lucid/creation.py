"""Factory functions: tensors filled with constants, ranges and random numbers.

Random numbers come from MLX's global PRNG; :func:`manual_seed` seeds it.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from .tensor import Tensor

__all__ = [
    "zeros",
    "ones",
    "full",
    "zeros_like",
    "ones_like",
    "arange",
    "randn",
    "rand",
    "manual_seed",
]


def _shape(shape: tuple[Any, ...]) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(n) for n in shape)


def zeros(*shape: Any, dtype: mx.Dtype = mx.float32, requires_grad: bool = False) -> Tensor:
    return Tensor(mx.zeros(_shape(shape), dtype=dtype), requires_grad=requires_grad)


def ones(*shape: Any, dtype: mx.Dtype = mx.float32, requires_grad: bool = False) -> Tensor:
    return Tensor(mx.ones(_shape(shape), dtype=dtype), requires_grad=requires_grad)


def full(
    shape: Any, fill_value: float, dtype: mx.Dtype | None = None, requires_grad: bool = False
) -> Tensor:
    shape = _shape((shape,)) if isinstance(shape, (tuple, list)) else (int(shape),)
    if dtype is None:
        dtype = mx.float32 if isinstance(fill_value, float) else mx.array(fill_value).dtype
    return Tensor(mx.full(shape, fill_value, dtype=dtype), requires_grad=requires_grad)


def zeros_like(t: Tensor, dtype: mx.Dtype | None = None, requires_grad: bool = False) -> Tensor:
    return Tensor(mx.zeros(t.shape, dtype=dtype or t.dtype), requires_grad=requires_grad)


def ones_like(t: Tensor, dtype: mx.Dtype | None = None, requires_grad: bool = False) -> Tensor:
    return Tensor(mx.ones(t.shape, dtype=dtype or t.dtype), requires_grad=requires_grad)


def arange(
    start: float, stop: float | None = None, step: float = 1, dtype: mx.Dtype | None = None
) -> Tensor:
    """Values ``start, start + step, ...`` below ``stop`` (``arange(n)`` counts from 0)."""
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        is_int = all(isinstance(v, int) for v in (start, stop, step))
        dtype = mx.int32 if is_int else mx.float32
    return Tensor(mx.arange(start, stop, step, dtype=dtype))


def randn(*shape: Any, dtype: mx.Dtype = mx.float32, requires_grad: bool = False) -> Tensor:
    """Standard normal samples."""
    return Tensor(mx.random.normal(_shape(shape), dtype=dtype), requires_grad=requires_grad)


def rand(*shape: Any, dtype: mx.Dtype = mx.float32, requires_grad: bool = False) -> Tensor:
    """Uniform samples in ``[0, 1)``."""
    return Tensor(mx.random.uniform(shape=_shape(shape), dtype=dtype), requires_grad=requires_grad)


def manual_seed(seed: int) -> None:
    """Seed MLX's global random generator (used by ``randn``, ``rand`` and layer init)."""
    mx.random.seed(int(seed))
