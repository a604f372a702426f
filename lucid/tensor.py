"""Tensor: an ``mx.array`` plus a reverse-mode autograd graph.

Every op builds its output with :func:`_result`, handing over the parents and a
``backward`` closure that maps the output's gradient to one gradient per parent.
The engine in :meth:`Tensor.backward` walks the graph in reverse topological
order, sums gradients of broadcast inputs back to each input's shape (in one
place, :func:`unbroadcast`), and adds the result into every leaf's ``.grad``.

Nothing here calls ``mx.eval``: values and gradients stay lazy until the
optimizer's step evaluates them all at once.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import mlx.core as mx
import numpy as np

from . import bounds

__all__ = ["Tensor", "tensor", "no_grad", "is_grad_enabled", "unbroadcast"]

_DEVICES = ("cpu", "cuda", "mps", "gpu")  # accepted by .to(), which ignores them

Backward = Callable[[mx.array], Sequence["mx.array | None"]]

# --------------------------------------------------------------------------- grad mode

_mode = threading.local()

#: callables ``[(leaf, grad), ...] -> [(leaf, grad), ...]`` that every backward runs on
#: its leaf gradients before adding them into ``.grad`` (lucid.nn.parallel registers one)
_leaf_grad_hooks: list[Callable[[list[tuple[Any, Any]]], list[tuple[Any, Any]]]] = []


def is_grad_enabled() -> bool:
    return getattr(_mode, "enabled", True)


class no_grad:
    """Context manager (``with no_grad():``) and decorator (``@no_grad()``) under which
    no op records a graph.

    One instance may be entered again while it is active (``with ng: with ng: ...``): it
    keeps a stack of the modes to restore. A decorated generator function runs each step
    of its body without grad, as in PyTorch.
    """

    def __init__(self) -> None:
        self._saved: list[bool] = []

    def __enter__(self) -> None:
        self._saved.append(is_grad_enabled())
        _mode.enabled = False

    def __exit__(self, *exc: object) -> None:
        _mode.enabled = self._saved.pop()

    def __call__(self, func: Callable) -> Callable:
        # a fresh instance per call: a shared one would lose the saved mode when the
        # decorated function runs in two threads at once
        if inspect.isgeneratorfunction(func):
            return _no_grad_generator(func)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with no_grad():
                return func(*args, **kwargs)

        return wrapper


def _no_grad_generator(func: Callable) -> Callable:
    """Wrap a generator function so that its body runs without grad, step by step: the
    caller's code between two ``next()`` calls keeps the caller's mode."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        gen = func(*args, **kwargs)
        try:
            with no_grad():
                item = next(gen)
            while True:
                try:
                    sent = yield item
                except GeneratorExit:
                    with no_grad():
                        gen.close()
                    raise
                except BaseException as exc:  # thrown in by the caller: pass it on
                    with no_grad():
                        item = gen.throw(exc)
                else:
                    with no_grad():
                        item = gen.send(sent)
        except StopIteration as stop:
            return stop.value

    return wrapper


# --------------------------------------------------------------------------- conversion


def _freed(g: mx.array) -> Sequence[mx.array | None]:
    """The backward of an intermediate whose graph an earlier ``backward()`` freed."""
    raise RuntimeError(
        "Trying to backward through the graph a second time (or to reach an intermediate "
        "tensor's graph after it was freed by backward()). Specify retain_graph=True on "
        "the first backward() call to keep the graph."
    )


def _to_array(obj: Any, dtype: mx.Dtype | None = None) -> mx.array:
    """Turn scalars, nested lists, NumPy arrays, mx.arrays and Tensors into an mx.array.

    Python floats become float32 (torch's default dtype) and NumPy float64 is narrowed
    to float32. Integers become int32 unless a value needs int64: narrowing those would
    silently wrap them (``2**40`` would become 0).
    """
    if isinstance(obj, np.generic):  # NumPy scalars follow the NumPy-array rules
        obj = np.asarray(obj)
    if isinstance(obj, Tensor):
        arr = obj.data
    elif isinstance(obj, mx.array):
        arr = obj
    elif isinstance(obj, np.ndarray):
        obj = np.asarray(obj, order="C")  # MLX refuses views with negative strides (a[::-1])
        if obj.dtype == np.float64:
            obj = obj.astype(np.float32)
        elif obj.dtype == np.int64 and _fits_int32(obj):
            obj = obj.astype(np.int32)
        arr = mx.array(obj)
    elif isinstance(obj, (bool, int, float, list, tuple)):
        try:
            arr = mx.array(obj)  # already int32 unless some value needs int64
        except (TypeError, ValueError):  # MLX refuses NumPy scalars inside a list
            as_numpy = _numeric_numpy(obj)
            if as_numpy is None:
                raise
            return _to_array(as_numpy, dtype)
        if arr.dtype == mx.float64:
            arr = arr.astype(mx.float32)
    else:
        raise TypeError(
            f"tensor(): data must be a Python scalar, nested list, NumPy array, mx.array "
            f"or Tensor; got {type(obj).__name__}"
        )
    if dtype is not None and arr.dtype != dtype:
        arr = arr.astype(dtype)
    return arr


def _numeric_numpy(obj: list | tuple) -> np.ndarray | None:
    """``obj`` as a NumPy array of bools or numbers, or None when it is not one."""
    try:
        a = np.asarray(obj)
    except ValueError:  # ragged
        return None
    return a if a.dtype.kind in "biuf" else None


def _fits_int32(a: np.ndarray) -> bool:
    info = np.iinfo(np.int32)
    return a.size == 0 or (info.min <= a.min() and a.max() <= info.max)


def _is_floating(dtype: mx.Dtype) -> bool:
    return mx.issubdtype(dtype, mx.floating)


def unbroadcast(grad: mx.array, shape: tuple[int, ...]) -> mx.array:
    """Sum ``grad`` over the axes that broadcasting added or stretched to reach ``shape``."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _accumulate(a: Any, b: Any) -> Any:
    """Add two gradient contributions; either may be a row-sparse gradient."""
    if a is None:
        return b
    if isinstance(a, mx.array) and not isinstance(b, mx.array):
        return b + a  # mx.array refuses foreign operands; the gradient object adds itself
    return a + b


# --------------------------------------------------------------------------- PyTorch names


def _torch_names(**aliases: str) -> Callable[[Callable], Callable]:
    """Accept PyTorch's keyword names for lucid's: ``dim=`` for ``axis=`` and so on.

    ``_torch_names(dim="axis", keepdim="keepdims")`` maps ``f(x, dim=1, keepdim=True)``
    to ``f(x, axis=1, keepdims=True)``. Passing a name and its alias together raises
    ``TypeError``, as a repeated argument does.
    """

    def wrap(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if kwargs:
                for alias, name in aliases.items():
                    if alias in kwargs:
                        if name in kwargs:
                            raise TypeError(
                                f"{func.__name__}(): got both {name}= and {alias}= "
                                f"(PyTorch's name for {name}); pass one"
                            )
                        kwargs[name] = kwargs.pop(alias)
            return func(*args, **kwargs)

        return wrapper

    return wrap


_axis_names = _torch_names(dim="axis", keepdim="keepdims")


def _target_dtype(who: str, args: tuple[Any, ...], dtype: Any) -> mx.Dtype | None:
    """The dtype that ``.to(*args, dtype=dtype)`` asks for, or None for none.

    Each positional argument is a dtype or a device: a string such as ``"cpu"``,
    ``"cuda:0"`` or ``"mps"``, ``mx.gpu`` or an ``mx.Device``. lucid has no devices (arrays
    live where MLX's default device puts them; see ``mx.set_default_device``), so a device
    is accepted and ignored: ``model.to(device)`` in a ported PyTorch script does nothing.
    """
    wanted: list[Any] = [] if dtype is None else [dtype]
    for arg in args:
        if isinstance(arg, (mx.Device, mx.DeviceType)):  # mx.Device(mx.gpu), mx.gpu
            continue
        if isinstance(arg, str):
            if arg.split(":")[0] not in _DEVICES:
                raise ValueError(
                    f"{who}: unknown device {arg!r}; expected one of {', '.join(_DEVICES)} "
                    "(optionally with ':<index>'), which lucid accepts and ignores"
                )
            continue
        wanted.append(arg)
    for d in wanted:
        if not isinstance(d, mx.Dtype):
            raise TypeError(f"{who}: expected a dtype (e.g. lucid.float16) or a device; got {d!r}")
    if len(set(wanted)) > 1:
        raise TypeError(f"{who}: got more than one dtype: {', '.join(map(str, wanted))}")
    return wanted[0] if wanted else None


# --------------------------------------------------------------------------- Tensor


class Tensor:
    """An ``mx.array`` (``.data``) that records the ops applied to it.

    ``requires_grad`` marks a leaf whose gradient ``backward()`` accumulates into
    ``.grad``. Arithmetic follows NumPy broadcasting; Python scalars work on either side.
    """

    __slots__ = ("data", "grad", "requires_grad", "_parents", "_backward", "_op", "__weakref__")
    __array_priority__ = 1000  # so `np_array * tensor` defers to Tensor.__rmul__

    def __init__(self, data: Any, dtype: mx.Dtype | None = None, requires_grad: bool = False):
        self.data: mx.array = _to_array(data, dtype)
        if requires_grad and not _is_floating(self.data.dtype):
            raise TypeError(
                f"requires_grad=True needs a floating dtype; got {self.data.dtype}. "
                "Pass float data or dtype=lucid.float32."
            )
        self.grad: Any = None
        self.requires_grad: bool = bool(requires_grad)
        self._parents: tuple[Tensor, ...] = ()
        self._backward: Backward | None = None
        self._op: str = ""

    # ---- properties
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> mx.Dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    def numel(self) -> int:
        return self.data.size

    @property
    def is_leaf(self) -> bool:
        return self._backward is None

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        # without this Python iterates through __getitem__ until IndexError, which MLX
        # never raises, so `for row in t` would run forever
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __bool__(self) -> bool:
        # without this bool() falls back to __len__: tensor([0.]) would be True
        if self.size != 1:
            raise ValueError(
                f"bool() of a tensor with {self.size} elements is ambiguous; "
                "reduce it to one element first"
            )
        return bool(self.item())

    # ---- conversion
    def detach(self) -> Tensor:
        """The same values (the same ``mx.array``) with no graph and no grad."""
        return Tensor(self.data)

    def clone(self) -> Tensor:
        """A copy that stays in the graph, as in torch: the gradient flows back unchanged.
        The copy holds its own ``mx.array`` object, so item assignment into
        ``clone.data`` leaves ``self`` alone."""
        return _result(mx.array(self.data), (self,), lambda g: (g,), "clone")

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Set ``requires_grad`` on this leaf in place and return it (freezing with False)."""
        if not isinstance(requires_grad, bool):
            raise TypeError(
                f"requires_grad_(): requires_grad must be a bool; got {requires_grad!r}"
            )
        if not self.is_leaf and not requires_grad:
            raise RuntimeError(
                "requires_grad_(False): only a leaf's flag can change; use .detach() to take "
                "a computed tensor out of the graph"
            )
        if requires_grad and not _is_floating(self.dtype):
            raise TypeError(f"requires_grad_(True) needs a floating dtype; got {self.dtype}")
        self.requires_grad = requires_grad
        return self

    def to(self, *args: Any, dtype: mx.Dtype | None = None) -> Tensor:
        """``t.to(dtype)``, ``t.to(device)``, ``t.to(device, dtype)``: cast, differentiably.

        Returns ``self`` when the dtype is already right (as torch does). A device
        (``"cpu"``, ``"cuda"``, ``"mps"``, ``"gpu"``, with an optional ``":0"``, or an
        ``mx.Device``) is accepted and ignored: lucid has no devices, MLX places arrays.
        """
        target = _target_dtype("Tensor.to()", args, dtype)
        return self if target is None or target == self.dtype else astype(self, target)

    def float(self) -> Tensor:
        """``self.to(lucid.float32)``."""
        return self.to(mx.float32)

    def half(self) -> Tensor:
        """``self.to(lucid.float16)``."""
        return self.to(mx.float16)

    # ---- interop: NumPy and MLX functions read a Tensor's values, without its graph
    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """NumPy's conversion protocol: ``np.asarray(t)``, ``np.array(t)`` and what is built
        on them (``np.allclose``, matplotlib) see the values, not an object array.

        Gives a new array (bfloat16, which NumPy lacks, as float32: exact), cast to
        ``dtype`` if given. With ``copy=False`` (NumPy 2) it gives a read-only view of the
        evaluated MLX buffer, and raises ``ValueError`` where that needs a copy (a
        bfloat16 tensor, or another ``dtype``). Pending lazy index checks are raised here,
        as in :meth:`numpy` (see :mod:`lucid.bounds`).
        """
        wanted = None if dtype is None else np.dtype(dtype)
        if copy is False:
            own = None if self.dtype == mx.bfloat16 else np.dtype(str(self.dtype).split(".")[-1])
            if own is None or (wanted is not None and wanted != own):
                raise ValueError(
                    f"np.asarray(Tensor, copy=False): a tensor of dtype {self.dtype} cannot "
                    f"be viewed as {wanted or 'a NumPy array'} without a copy"
                )
            bounds.check_pending(self.data, at="np.asarray(Tensor)")
            view = np.asarray(self.data)
            view.flags.writeable = False  # a write would change an "immutable" MLX array
            return view
        shown = self.data.astype(mx.float32) if self.dtype == mx.bfloat16 else self.data
        bounds.check_pending(shown, at="np.asarray(Tensor)")
        values = np.array(shown)
        return values if wanted is None else values.astype(wanted, copy=False)

    def __mlx_array__(self) -> mx.array:
        """MLX's conversion protocol: ``mx.array(t)``, ``mx.abs(t)``, ``arr + t`` read
        ``t.data``. The result is an ``mx.array``, outside lucid's graph."""
        return self.data

    # Reading values raises for any lazy index check still pending (lucid.bounds), with
    # the flags evaluated in the same mx.eval as the value.
    def numpy(self) -> np.ndarray:
        if self.dtype == mx.bfloat16:
            raise TypeError("numpy(): NumPy has no bfloat16; call .astype(lucid.float32) first")
        bounds.check_pending(self.data, at="Tensor.numpy()")
        return np.array(self.data)

    def item(self) -> float | int | bool:
        if self.size != 1:
            raise ValueError(
                f"item(): only a one-element tensor has an item; shape is {self.shape}"
            )
        bounds.check_pending(self.data, at="Tensor.item()")
        return self.data.item()

    def tolist(self) -> Any:
        bounds.check_pending(self.data, at="Tensor.tolist()")
        return self.data.tolist()

    def __float__(self) -> float:
        return float(self.item())

    def __repr__(self) -> str:
        # NumPy has no bfloat16, so those values are shown through float32
        shown = self.data.astype(mx.float32) if self.dtype == mx.bfloat16 else self.data
        body = np.array2string(np.array(shown), separator=", ", precision=4, threshold=50)
        extras = [f"dtype={str(self.dtype).removeprefix('mlx.core.')}"]
        if self._op:
            extras.append(f"grad_fn={self._op}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return f"tensor({body}, {', '.join(extras)})"

    # ---- autograd
    def backward(self, gradient: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``gradient`` is required unless ``self`` has exactly one element. As in PyTorch,
        the walk frees the graph (each intermediate drops its inputs and its saved arrays),
        so a second ``backward`` through the same intermediates raises ``RuntimeError``;
        pass ``retain_graph=True`` to keep the graph for another call. Gradients of a new
        graph add into the ``.grad`` left by earlier calls.
        """
        if gradient is None:
            if self.size != 1:
                raise RuntimeError(
                    f"backward(): gradient can be implicitly created only for a one-element "
                    f"tensor; this one has shape {self.shape}. Pass gradient=..."
                )
            seed = mx.ones(self.data.shape, dtype=self.dtype)
        else:
            seed = _to_array(gradient, self.dtype)
            if seed.shape != self.data.shape:
                raise ValueError(
                    f"backward(): gradient has shape {tuple(seed.shape)}, expected {self.shape}"
                )
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad and has no graph")

        order: list[Tensor] = []
        seen: set[int] = set()
        stack: list[tuple[Tensor, bool]] = [(self, False)]
        while stack:  # iterative DFS so deep graphs don't hit the recursion limit
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((p, False) for p in node._parents if p.requires_grad)
        if any(node._backward is _freed for node in order):  # checked before any write
            _freed(seed)

        grads: dict[int, Any] = {id(self): seed}
        leaf_grads: list[tuple[Tensor, Any]] = []  # accumulated after the walk, see below
        for node in reversed(order):
            g = grads.pop(id(node), None)
            parents, backward = node._parents, node._backward
            if backward is not None and not retain_graph:
                node._parents, node._backward = (), _freed  # still not a leaf
            if g is None:
                continue
            if backward is None:
                leaf_grads.append((node, g))
                continue
            for parent, pg in zip(parents, backward(g), strict=True):
                if pg is None or not parent.requires_grad:
                    continue
                if isinstance(pg, mx.array):
                    pg = unbroadcast(pg, parent.shape)
                grads[id(parent)] = _accumulate(grads.get(id(parent)), pg)
        # the hooks see this backward's leaf gradients together, before they are added
        # into .grad (DistributedDataParallel replaces them by their mean over ranks)
        for hook in list(_leaf_grad_hooks):
            leaf_grads = hook(leaf_grads)
        for leaf, g in leaf_grads:
            leaf._accumulate_grad(g)

    def _accumulate_grad(self, g: Any) -> None:
        if isinstance(g, mx.array) and g.dtype != self.dtype:
            g = g.astype(self.dtype)
        # .grad holds a Tensor, or a gradient object of its own kind (lucid.SparseGrad),
        # which knows how to add itself to another (sparse + dense gives dense)
        prev = self.grad.data if isinstance(self.grad, Tensor) else self.grad
        total = _accumulate(prev, g)
        self.grad = Tensor(total) if isinstance(total, mx.array) else total

    # ---- arithmetic
    def __add__(self, other: Any) -> Tensor:
        return add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return div(other, self)

    def __pow__(self, other: Any) -> Tensor:
        return pow(self, other)

    def __rpow__(self, other: Any) -> Tensor:
        return pow(other, self)

    def __neg__(self) -> Tensor:
        return neg(self)

    def __matmul__(self, other: Any) -> Tensor:
        return matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return matmul(other, self)

    def __getitem__(self, index: Any) -> Tensor:
        return getitem(self, index)

    # comparisons give plain (non-differentiable) boolean tensors
    def __lt__(self, other: Any) -> Tensor:
        return Tensor(self.data < _data(other))

    def __le__(self, other: Any) -> Tensor:
        return Tensor(self.data <= _data(other))

    def __gt__(self, other: Any) -> Tensor:
        return Tensor(self.data > _data(other))

    def __ge__(self, other: Any) -> Tensor:
        return Tensor(self.data >= _data(other))

    def eq(self, other: Any) -> Tensor:
        return Tensor(self.data == _data(other))

    def ne(self, other: Any) -> Tensor:
        return Tensor(self.data != _data(other))

    # == and != are elementwise, as in torch; hashing stays by identity, so tensors can key
    # dicts and sets, but `t in some_list` compares values: use `any(t is p for p in ...)`.
    # Operands that are no array (None, a string) fall back to identity: `t == None` is False.
    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        try:
            return self.eq(other)
        except TypeError:
            return NotImplemented

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        try:
            return self.ne(other)
        except TypeError:
            return NotImplemented

    __hash__ = object.__hash__  # identity: tensors key optimizer state

    # ---- methods mirroring the functions below
    def matmul(self, other: Any) -> Tensor:
        return matmul(self, other)

    def exp(self) -> Tensor:
        return exp(self)

    def log(self) -> Tensor:
        return log(self)

    def sqrt(self) -> Tensor:
        return sqrt(self)

    def abs(self) -> Tensor:
        return abs(self)

    def tanh(self) -> Tensor:
        return tanh(self)

    def sigmoid(self) -> Tensor:
        return sigmoid(self)

    def relu(self) -> Tensor:
        return relu(self)

    def gelu(self) -> Tensor:
        return gelu(self)

    def clip(self, min: float | None = None, max: float | None = None) -> Tensor:
        return clip(self, min, max)

    # every method and function that takes an axis also takes PyTorch's dim= (keepdim=)
    @_axis_names
    def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return sum(self, axis, keepdims)

    @_axis_names
    def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return mean(self, axis, keepdims)

    @_axis_names
    def max(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return max(self, axis, keepdims)

    @_axis_names
    def min(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return min(self, axis, keepdims)

    @_axis_names
    def argmax(self, axis: int | None = None, keepdims: bool = False) -> Tensor:
        return argmax(self, axis, keepdims)

    @_axis_names
    def argmin(self, axis: int | None = None, keepdims: bool = False) -> Tensor:
        return argmin(self, axis, keepdims)

    @_axis_names
    def var(self, axis: Any = None, keepdims: bool = False, ddof: int = 0) -> Tensor:
        return var(self, axis, keepdims, ddof)

    def reshape(self, *shape: Any) -> Tensor:
        return reshape(self, _shape_args(shape))

    def view(self, *shape: Any) -> Tensor:
        return reshape(self, _shape_args(shape))

    def transpose(self, *axes: Any) -> Tensor:
        """``t.transpose(d0, d1)`` swaps two axes, as in torch; ``t.transpose()`` reverses
        all axes and ``t.transpose(p0, ..., pn)`` with every axis applies a permutation
        (NumPy). For a 2-D tensor both readings of two axes give the matrix transpose."""
        axes = _shape_args(axes)
        if len(axes) == 2:  # list indexing handles negative axes and rejects bad ones
            perm = list(range(self.ndim))
            perm[axes[0]], perm[axes[1]] = perm[axes[1]], perm[axes[0]]
            axes = tuple(perm)
        return transpose(self, axes or None)

    def permute(self, *axes: Any) -> Tensor:
        return transpose(self, _shape_args(axes))

    @property
    def T(self) -> Tensor:
        return transpose(self)

    @_axis_names
    def squeeze(self, axis: Any = None) -> Tensor:
        return squeeze(self, axis)

    @_axis_names
    def unsqueeze(self, axis: int) -> Tensor:
        return unsqueeze(self, axis)

    @_torch_names(start_dim="start_axis", end_dim="end_axis")
    def flatten(self, start_axis: int = 0, end_axis: int = -1) -> Tensor:
        return flatten(self, start_axis, end_axis)

    @_axis_names
    def softmax(self, axis: int = -1) -> Tensor:
        return softmax(self, axis)

    @_axis_names
    def log_softmax(self, axis: int = -1) -> Tensor:
        return log_softmax(self, axis)

    @_axis_names
    def logsumexp(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return logsumexp(self, axis, keepdims)

    def astype(self, dtype: mx.Dtype) -> Tensor:
        return astype(self, dtype)


def tensor(data: Any, dtype: mx.Dtype | None = None, requires_grad: bool = False) -> Tensor:
    """Build a Tensor from a scalar, nested list, NumPy array, mx.array or Tensor."""
    return Tensor(data, dtype=dtype, requires_grad=requires_grad)


# --------------------------------------------------------------------------- op plumbing


def _data(x: Any) -> mx.array:
    return x.data if isinstance(x, Tensor) else _to_array(x)


def _operand(x: Any, like: Tensor | None) -> Tensor:
    """Wrap a non-Tensor operand; Python scalars take the other operand's dtype (as in torch)."""
    if isinstance(x, Tensor):
        return x
    scalar = isinstance(x, (int, float)) and not isinstance(x, bool)
    if scalar and like is not None and (_is_floating(like.dtype) or isinstance(x, int)):
        return Tensor(mx.array(x, dtype=like.dtype))
    return Tensor(x)


def _shape_args(args: tuple[Any, ...]) -> tuple[int, ...]:
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(args[0])
    return tuple(args)


def _result(data: mx.array, parents: tuple[Tensor, ...], backward: Backward, op: str) -> Tensor:
    """Wrap ``data``; record ``parents`` and ``backward`` when any parent needs a gradient."""
    out = Tensor(data)
    if is_grad_enabled() and any(p.requires_grad for p in parents):
        out.requires_grad = True
        out._parents = parents
        out._backward = backward
        out._op = op
    return out


def _binary(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    a_t = a if isinstance(a, Tensor) else None
    b_t = b if isinstance(b, Tensor) else None
    return _operand(a, b_t), _operand(b, a_t)


def _axes(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(a % ndim if ndim else 0 for a in axis)


def _expand_reduced(g: mx.array, shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool):
    """Re-insert reduced axes so ``g`` broadcasts against the reduction's input."""
    if not keepdims and axes:
        g = mx.expand_dims(g, axes)
    return mx.broadcast_to(g, shape)


# --------------------------------------------------------------------------- arithmetic


def add(a: Any, b: Any) -> Tensor:
    a, b = _binary(a, b)
    return _result(a.data + b.data, (a, b), lambda g: (g, g), "add")


def sub(a: Any, b: Any) -> Tensor:
    a, b = _binary(a, b)
    return _result(a.data - b.data, (a, b), lambda g: (g, -g), "sub")


def mul(a: Any, b: Any) -> Tensor:
    a, b = _binary(a, b)
    x, y = a.data, b.data
    return _result(x * y, (a, b), lambda g: (g * y, g * x), "mul")


def div(a: Any, b: Any) -> Tensor:
    a, b = _binary(a, b)
    y = b.data
    out = a.data / y
    return _result(out, (a, b), lambda g: (g / y, -g * out / y), "div")


def pow(a: Any, b: Any) -> Tensor:
    """``a ** b``. The gradients follow torch at the edges: d/da is 0 where ``b == 0``
    (even at ``a == 0``), and d/db ``= a**b log a`` is 0 where ``a == 0`` and ``b >= 0``
    and NaN where ``a < 0``."""
    a, b = _binary(a, b)
    x, y = a.data, b.data
    out = mx.power(x, y)
    need_a, need_b = a.requires_grad, b.requires_grad

    def backward(g: mx.array):
        ga = gb = None
        if need_a:
            ga = mx.where(y == 0, 0, g * y * mx.power(x, y - 1))
        if need_b:
            gb = mx.where((x == 0) & (y >= 0), 0, g * out * mx.log(x))
        return ga, gb

    return _result(out, (a, b), backward, "pow")


def neg(a: Tensor) -> Tensor:
    return _result(-a.data, (a,), lambda g: (-g,), "neg")


def matmul(a: Any, b: Any) -> Tensor:
    """``a @ b`` with NumPy semantics (1-D operands are promoted, batch dims broadcast)."""
    a, b = _binary(a, b)
    x, y = a.data, b.data
    out = x @ y

    def backward(g: mx.array):
        x2 = x[None, :] if x.ndim == 1 else x
        y2 = y[:, None] if y.ndim == 1 else y
        g2 = g  # re-insert the axes that 1-D promotion removed: y's last first, so that
        if y.ndim == 1:  # a 0-d gradient (vector @ vector) becomes (1, 1)
            g2 = mx.expand_dims(g2, -1)
        if x.ndim == 1:
            g2 = mx.expand_dims(g2, -2)
        ga = g2 @ mx.swapaxes(y2, -1, -2)
        gb = mx.swapaxes(x2, -1, -2) @ g2
        if x.ndim == 1:
            ga = unbroadcast(ga, (1,) * (ga.ndim - 2) + x2.shape).reshape(x.shape)
        if y.ndim == 1:
            gb = unbroadcast(gb, (1,) * (gb.ndim - 2) + y2.shape).reshape(y.shape)
        return ga, gb

    return _result(out, (a, b), backward, "matmul")


# --------------------------------------------------------------------------- elementwise


def exp(a: Tensor) -> Tensor:
    out = mx.exp(a.data)
    return _result(out, (a,), lambda g: (g * out,), "exp")


def log(a: Tensor) -> Tensor:
    x = a.data
    return _result(mx.log(x), (a,), lambda g: (g / x,), "log")


def sqrt(a: Tensor) -> Tensor:
    out = mx.sqrt(a.data)
    return _result(out, (a,), lambda g: (g / (2 * out),), "sqrt")


def abs(a: Tensor) -> Tensor:
    x = a.data
    return _result(mx.abs(x), (a,), lambda g: (g * mx.sign(x),), "abs")


def tanh(a: Tensor) -> Tensor:
    out = mx.tanh(a.data)
    return _result(out, (a,), lambda g: (g * (1 - out * out),), "tanh")


def sigmoid(a: Tensor) -> Tensor:
    out = mx.sigmoid(a.data)
    return _result(out, (a,), lambda g: (g * out * (1 - out),), "sigmoid")


def relu(a: Tensor) -> Tensor:
    x = a.data
    return _result(mx.maximum(x, 0), (a,), lambda g: (mx.where(x > 0, g, 0),), "relu")


_SQRT_2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def gelu(a: Tensor) -> Tensor:
    """Exact GELU, ``x * Phi(x)`` with the normal CDF ``Phi`` (torch's default)."""
    x = a.data
    cdf = 0.5 * (1 + mx.erf(x / _SQRT_2))

    def backward(g: mx.array):
        pdf = _INV_SQRT_2PI * mx.exp(-0.5 * x * x)
        return (g * (cdf + x * pdf),)

    return _result(x * cdf, (a,), backward, "gelu")


def clip(a: Tensor, min: float | None = None, max: float | None = None) -> Tensor:
    """Clamp to ``[min, max]``; the gradient passes where the input is inside the range."""
    if min is None and max is None:
        raise ValueError("clip(): at least one of min and max must be given")
    x = a.data
    out = mx.clip(x, min, max)

    def backward(g: mx.array):
        inside = mx.ones(x.shape, dtype=mx.bool_)
        if min is not None:
            inside = inside & (x >= min)
        if max is not None:
            inside = inside & (x <= max)
        return (mx.where(inside, g, 0),)

    return _result(out, (a,), backward, "clip")


def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise max; on ties the gradient is split evenly (as torch does)."""
    a, b = _binary(a, b)
    return _select_binary(a, b, mx.maximum(a.data, b.data), a.data > b.data, "maximum")


def minimum(a: Any, b: Any) -> Tensor:
    a, b = _binary(a, b)
    return _select_binary(a, b, mx.minimum(a.data, b.data), a.data < b.data, "minimum")


def _select_binary(a: Tensor, b: Tensor, out: mx.array, a_wins: mx.array, op: str) -> Tensor:
    tie = a.data == b.data

    def backward(g: mx.array):
        wa = mx.where(tie, 0.5, mx.where(a_wins, 1.0, 0.0)).astype(g.dtype)
        return g * wa, g * (1 - wa)

    return _result(out, (a, b), backward, op)


def where(cond: Any, a: Any, b: Any) -> Tensor:
    c = _data(cond)
    a, b = _binary(a, b)
    out = mx.where(c, a.data, b.data)
    return _result(out, (a, b), lambda g: (mx.where(c, g, 0), mx.where(c, 0, g)), "where")


def astype(a: Tensor, dtype: mx.Dtype) -> Tensor:
    src = a.dtype
    return _result(a.data.astype(dtype), (a,), lambda g: (g.astype(src),), "astype")


# --------------------------------------------------------------------------- reductions


@_axis_names
def sum(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    axes = _axes(axis, a.ndim)
    out = mx.sum(a.data, axis=axes, keepdims=keepdims)
    shape = a.shape
    return _result(out, (a,), lambda g: (_expand_reduced(g, shape, axes, keepdims),), "sum")


@_axis_names
def mean(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    axes = _axes(axis, a.ndim)
    shape = a.shape
    n = math.prod(shape[i] for i in axes)
    out = mx.mean(a.data, axis=axes, keepdims=keepdims)
    return _result(out, (a,), lambda g: (_expand_reduced(g / n, shape, axes, keepdims),), "mean")


def _extremum(a: Tensor, axis: Any, keepdims: bool, fn: Callable, op: str) -> Tensor:
    """max/min; the gradient is shared evenly among tied extreme elements."""
    axes = _axes(axis, a.ndim)
    x = a.data
    out = fn(x, axis=axes, keepdims=keepdims)

    def backward(g: mx.array):
        full = _expand_reduced(out, x.shape, axes, keepdims)
        hit = (x == full).astype(g.dtype)
        count = mx.sum(hit, axis=axes, keepdims=True)
        return (_expand_reduced(g, x.shape, axes, keepdims) * hit / count,)

    return _result(out, (a,), backward, op)


@_axis_names
def max(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    return _extremum(a, axis, keepdims, mx.max, "max")


@_axis_names
def min(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    return _extremum(a, axis, keepdims, mx.min, "min")


def _arg_extremum(a: Any, axis: int | None, keepdims: bool, fn: Callable, who: str) -> Tensor:
    x = _data(a)
    n = x.size if axis is None else x.shape[axis] if x.ndim else 1
    if n == 0:
        raise ValueError(f"{who}(): the {'tensor' if axis is None else f'axis {axis}'} is empty")
    return Tensor(fn(x, axis=axis, keepdims=keepdims).astype(mx.int32))


@_axis_names
def argmax(a: Any, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """The index of the largest value along ``axis``, or in the flattened tensor when
    ``axis`` is None; the first one on ties, as in NumPy and torch. An int32 Tensor (torch
    gives int64; int32 is what lucid indexes with), with no gradient."""
    return _arg_extremum(a, axis, keepdims, mx.argmax, "argmax")


@_axis_names
def argmin(a: Any, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """The index of the smallest value; see :func:`argmax`."""
    return _arg_extremum(a, axis, keepdims, mx.argmin, "argmin")


@_axis_names
def var(a: Tensor, axis: Any = None, keepdims: bool = False, ddof: int = 0) -> Tensor:
    """Variance ``sum((x - mean)^2) / (n - ddof)`` (ddof=0 by default, like NumPy).

    With ``ddof >= n`` the divisor is 0, as in torch: the value is inf (NaN where all
    values are equal), and so is the gradient (NaN where ``x == mean``).
    """
    axes = _axes(axis, a.ndim)
    shape = a.shape
    dof = math.prod(shape[i] for i in axes) - ddof
    centered = a.data - mx.mean(a.data, axis=axes, keepdims=True)
    out = mx.sum(centered * centered, axis=axes, keepdims=keepdims) / (dof if dof > 0 else 0)

    def backward(g: mx.array):
        g = _expand_reduced(g, shape, axes, keepdims)
        if dof > 0:
            return (g * centered * (2 / dof),)
        return (g * mx.where(centered == 0, math.nan, math.inf).astype(g.dtype),)

    return _result(out, (a,), backward, "var")


@_axis_names
def logsumexp(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    axes = _axes(axis, a.ndim)
    x = a.data
    out = mx.logsumexp(x, axis=axes, keepdims=keepdims)

    def backward(g: mx.array):
        full = _expand_reduced(out, x.shape, axes, keepdims)
        return (_expand_reduced(g, x.shape, axes, keepdims) * mx.exp(x - full),)

    return _result(out, (a,), backward, "logsumexp")


@_axis_names
def softmax(a: Tensor, axis: int = -1) -> Tensor:
    out = mx.softmax(a.data, axis=axis)

    def backward(g: mx.array):
        return (out * (g - mx.sum(g * out, axis=axis, keepdims=True)),)

    return _result(out, (a,), backward, "softmax")


@_axis_names
def log_softmax(a: Tensor, axis: int = -1) -> Tensor:
    out = a.data - mx.logsumexp(a.data, axis=axis, keepdims=True)

    def backward(g: mx.array):
        return (g - mx.exp(out) * mx.sum(g, axis=axis, keepdims=True),)

    return _result(out, (a,), backward, "log_softmax")


# --------------------------------------------------------------------------- shape


def reshape(a: Tensor, shape: Sequence[int]) -> Tensor:
    src = a.shape
    return _result(mx.reshape(a.data, shape), (a,), lambda g: (g.reshape(src),), "reshape")


def transpose(a: Tensor, axes: Sequence[int] | None = None) -> Tensor:
    axes = tuple(reversed(range(a.ndim))) if axes is None else tuple(x % a.ndim for x in axes)
    inverse = tuple(int(i) for i in np.argsort(axes))
    out = mx.transpose(a.data, axes)
    return _result(out, (a,), lambda g: (mx.transpose(g, inverse),), "transpose")


@_axis_names
def squeeze(a: Tensor, axis: Any = None) -> Tensor:
    out = mx.squeeze(a.data) if axis is None else mx.squeeze(a.data, axis)
    src = a.shape
    return _result(out, (a,), lambda g: (g.reshape(src),), "squeeze")


@_axis_names
def unsqueeze(a: Tensor, axis: int) -> Tensor:
    out = mx.expand_dims(a.data, axis)
    src = a.shape
    return _result(out, (a,), lambda g: (g.reshape(src),), "unsqueeze")


@_torch_names(start_dim="start_axis", end_dim="end_axis")
def flatten(a: Tensor, start_axis: int = 0, end_axis: int = -1) -> Tensor:
    out = mx.flatten(a.data, start_axis, end_axis) if a.ndim else a.data.reshape(1)
    src = a.shape
    return _result(out, (a,), lambda g: (g.reshape(src),), "flatten")


# --------------------------------------------------------------------------- indexing and joining


def _is_mask(i: Any) -> bool:
    return isinstance(i, (mx.array, np.ndarray)) and i.dtype in (mx.bool_, np.bool_)


def _checked_index(index: Any, shape: tuple[int, ...]) -> Any:
    """``index`` made safe for MLX, which reads and writes out of range without a word.

    Python ints are checked against their axis; integer arrays (lists, NumPy, mx.array,
    Tensor; also inside tuples with slices, None and Ellipsis) go through
    :func:`lucid.bounds.checked_indices`, which raises at once for host indices and clamps
    and checks lazily for ``mx.array`` ones, and comes back with negatives counted from the
    end; a boolean mask becomes the integer arrays of its True positions (this reads it).
    """
    items = list(index) if isinstance(index, tuple) else [index]
    for k, i in enumerate(items):
        if isinstance(i, Tensor):
            items[k] = i.data
        elif isinstance(i, (list, tuple)):  # a sequence inside an index is an array, as in NumPy
            items[k] = np.asarray(i)
    widths = [0 if i is None or i is Ellipsis else i.ndim if _is_mask(i) else 1 for i in items]
    if builtins.sum(widths) > len(shape):
        raise IndexError(
            f"too many indices for a tensor of dimension {len(shape)}: {builtins.sum(widths)}"
        )
    if builtins.sum(i is Ellipsis for i in items) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    out: list[Any] = []
    axis = 0
    for i, width in zip(items, widths, strict=True):
        if i is Ellipsis:  # the axes indexed after `...` are counted from the end
            axis += len(shape) - builtins.sum(widths)
            out.append(i)
            continue
        n = shape[axis] if axis < len(shape) else 0
        if isinstance(i, (int, np.integer)) and not isinstance(i, bool):
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
            out.append(int(i))
        elif _is_mask(i):
            out.extend(_mask_positions(i, shape, axis))
        elif isinstance(i, (mx.array, np.ndarray)):
            integral = mx.issubdtype(i.dtype, mx.integer) if isinstance(i, mx.array) else (
                i.dtype.kind in "iu" or i.size == 0  # np.asarray([]) is float64
            )  # fmt: skip
            if not integral:  # IndexError, as in NumPy and PyTorch
                raise IndexError(
                    f"indexing: arrays used as indices must hold integers or bools; "
                    f"got dtype {i.dtype}"
                )
            out.append(bounds.checked_indices(i, n, "indexing", f"axis {axis} with size {n}"))
        else:  # slices, None; anything else is MLX's to refuse
            out.append(i)
        axis += width
    return tuple(out) if isinstance(index, tuple) or len(out) != 1 else out[0]


def _mask_positions(mask: Any, shape: tuple[int, ...], axis: int) -> list[mx.array]:
    """The integer indices of ``mask``'s True entries, one array per axis it covers."""
    covered = tuple(shape[axis : axis + mask.ndim])
    if mask.ndim == 0 or tuple(mask.shape) != covered:
        raise IndexError(
            f"indexing: the boolean mask has shape {tuple(mask.shape)}, but the axes it indexes "
            f"(from axis {axis}) have shape {covered}"
        )
    return [mx.array(p.astype(np.int32)) for p in np.nonzero(np.asarray(mask))]


def getitem(a: Tensor, index: Any) -> Tensor:
    """``a[index]`` for ints, slices, None, Ellipsis, integer index arrays and boolean masks.

    Every index is range-checked (see :mod:`lucid.bounds`): a bad Python int, list or NumPy
    index raises ``IndexError`` here; an ``mx.array`` or Tensor index is clamped into range
    and checked lazily, raising by ``optimizer.step()``, ``.item()`` or ``.numpy()`` at the
    latest. Negative array indices count from the end, as in NumPy and PyTorch.

    A boolean mask (a bool Tensor, mx.array, NumPy array or list whose shape equals the
    axes it indexes) selects the True positions, as in NumPy: ``a[mask]`` has shape
    ``(mask.sum(), *a.shape[mask.ndim:])``. The output's shape depends on the mask's values,
    so a mask that is an mx.array or Tensor is evaluated here: **a synchronisation**.

    The backward scatters the gradient into zeros with ``.at[].add``, so an index
    repeated k times receives k contributions.
    """
    return _gather(a, _checked_index(index, a.shape))


def _gather(a: Tensor, idx: Any) -> Tensor:
    """``a[idx]`` with its backward, for an ``idx`` already made safe by the caller."""
    out = a.data[idx]
    src = a.shape

    def backward(g: mx.array):
        return (mx.zeros(src, dtype=g.dtype).at[idx].add(g),)

    return _result(out, (a,), backward, "getitem")


@_axis_names
def concatenate(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    ts = tuple(_operand(t, None) for t in tensors)
    out = mx.concatenate([t.data for t in ts], axis=axis)
    ax = axis % out.ndim
    bounds = list(np.cumsum([t.shape[ax] for t in ts])[:-1])

    def backward(g: mx.array):
        return tuple(mx.split(g, bounds, axis=ax))

    return _result(out, ts, backward, "concatenate")


@_axis_names
def stack(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    ts = tuple(_operand(t, None) for t in tensors)
    out = mx.stack([t.data for t in ts], axis=axis)
    ax = axis % out.ndim

    def backward(g: mx.array):
        return tuple(mx.squeeze(part, ax) for part in mx.split(g, len(ts), axis=ax))

    return _result(out, ts, backward, "stack")


cat = concatenate  # PyTorch's name
