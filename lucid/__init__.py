"""lucid: a compact, readable deep-learning framework whose training path runs on MLX."""

import mlx.core as _mx

from . import distributed, nn, optim, utils
from .compilation import compile as compile  # noqa: PLC0414  (shadows the builtin, like torch)
from .creation import arange, full, manual_seed, ones, ones_like, rand, randn, zeros, zeros_like
from .serialization import load, save
from .sparse import SparseGrad
from .tensor import (
    Tensor,
    abs,
    argmax,
    argmin,
    cat,
    clip,
    concatenate,
    exp,
    gelu,
    is_grad_enabled,
    log,
    log_softmax,
    logsumexp,
    matmul,
    maximum,
    mean,
    minimum,
    no_grad,
    relu,
    sigmoid,
    softmax,
    sqrt,
    stack,
    tanh,
    tensor,
    var,
    where,
)
from .tensor import max as max  # noqa: PLC0414  (shadows the builtin on purpose, like torch)
from .tensor import min as min  # noqa: PLC0414
from .tensor import sum as sum  # noqa: PLC0414

float32 = _mx.float32
float16 = _mx.float16
bfloat16 = _mx.bfloat16
int32 = _mx.int32
int64 = _mx.int64
bool_ = _mx.bool_

__version__ = "0.1.0"

__all__ = [
    "Tensor",
    "tensor",
    "SparseGrad",
    "no_grad",
    "is_grad_enabled",
    "zeros",
    "ones",
    "full",
    "zeros_like",
    "ones_like",
    "arange",
    "randn",
    "rand",
    "manual_seed",
    "abs",
    "exp",
    "log",
    "sqrt",
    "tanh",
    "sigmoid",
    "relu",
    "gelu",
    "clip",
    "maximum",
    "minimum",
    "where",
    "matmul",
    "sum",
    "mean",
    "max",
    "min",
    "var",
    "logsumexp",
    "softmax",
    "log_softmax",
    "argmax",
    "argmin",
    "concatenate",
    "cat",
    "stack",
    "float32",
    "float16",
    "bfloat16",
    "int32",
    "int64",
    "bool_",
    "compile",
    "save",
    "load",
    "nn",
    "optim",
    "utils",
    "distributed",
]
