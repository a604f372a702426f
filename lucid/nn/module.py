"""Module: the base class that registers parameters, buffers and submodules by assignment.

Assigning a :class:`Parameter` or a :class:`Module` to an attribute registers it under that
name; :meth:`Module.register_buffer` registers a non-trainable tensor that still belongs to
the state. Registries keep assignment order, and every walk (``parameters()``,
``named_modules()``, ``state_dict()``) visits a module's own entries before its children's,
depth first, as PyTorch does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import mlx.core as mx

from ..tensor import Tensor, _target_dtype, _to_array
from .parameter import Parameter

__all__ = ["Module", "IncompatibleKeys"]


class IncompatibleKeys(NamedTuple):
    """What :meth:`Module.load_state_dict` returns: keys it skipped (only when ``strict=False``)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _check_name(kind: str, name: Any) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{kind} name must be a str; got {type(name).__name__}")
    if name == "" or "." in name:
        raise KeyError(f"{kind} name must be non-empty and contain no '.'; got {name!r}")


def _indent(text: str, spaces: int) -> str:
    first, *rest = text.split("\n")
    return "\n".join([first] + [" " * spaces + line for line in rest])


class Registry(dict):
    """A module's parameters, buffers or submodules: a dict that counts every change.

    :attr:`Registry.changes` grows whenever any registry of any module gains, loses or
    replaces an entry, so code that walks module trees every call (``lucid.compile``)
    can keep the last walk while the count stands still."""

    changes = 0

    def __setitem__(self, key: str, value: Any) -> None:
        Registry.changes += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        Registry.changes += 1
        super().__delitem__(key)

    def pop(self, *args: Any) -> Any:
        Registry.changes += 1
        return super().pop(*args)

    def popitem(self) -> tuple[str, Any]:
        Registry.changes += 1
        return super().popitem()

    def clear(self) -> None:
        Registry.changes += 1
        super().clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        Registry.changes += 1
        super().update(*args, **kwargs)

    def setdefault(self, key: str, default: Any = None) -> Any:
        Registry.changes += 1
        return super().setdefault(key, default)

    def __ior__(self, other: Any) -> Registry:
        Registry.changes += 1
        return super().__ior__(other)


class Module:
    """Base class for layers and models.

    A subclass calls ``super().__init__()`` first, assigns its parameters and submodules as
    attributes, and defines ``forward``; calling the module calls ``forward``::

        class Scale(nn.Module):
            def __init__(self):
                super().__init__()
                self.param = nn.Parameter([1.0, 2.0, 3.0])

            def forward(self, x):
                return x * self.param

    ``training`` is ``True`` after construction; :meth:`train` and :meth:`eval` set it on the
    whole tree. Differences from PyTorch: there are no hooks and no devices (``to(device)`` is
    accepted and ignored; MLX places arrays); buffers are stored as (gradient-free) Tensors.
    """

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", Registry())
        object.__setattr__(self, "_buffers", Registry())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", Registry())
        object.__setattr__(self, "training", True)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # ---------------------------------------------------------------- registration

    def _registries(self) -> tuple[dict[str, Any], ...]:
        d = self.__dict__
        if "_parameters" not in d:
            raise AttributeError(
                f"{type(self).__name__}: cannot register parameters, buffers or submodules "
                "before Module.__init__() runs; call super().__init__() first"
            )
        return d["_parameters"], d["_buffers"], d["_modules"]

    def _forget(self, name: str) -> None:
        """Drop ``name`` from every registry and from the instance dict."""
        for registry in self._registries():
            registry.pop(name, None)
        self._non_persistent.discard(name)
        self.__dict__.pop(name, None)

    def _put(self, registry: dict[str, Any], name: str, value: Any) -> None:
        """Set ``registry[name]``; a name already in that registry keeps its place (as in
        PyTorch, so re-assigning or tying a weight does not reorder ``state_dict``)."""
        if name not in registry:
            self._forget(name)
        registry[name] = value

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, (Parameter, Module)):
            params, _, modules = self._registries()
            self._put(params if isinstance(value, Parameter) else modules, name, value)
            return
        d = self.__dict__
        if "_parameters" in d:
            params, buffers, modules = self._registries()
            if name in params:
                if value is not None:
                    raise TypeError(
                        f"cannot assign {type(value).__name__} to parameter {name!r}: "
                        "expected an nn.Parameter or None"
                    )
                params[name] = None
                return
            if name in modules:
                if value is not None:
                    raise TypeError(
                        f"cannot assign {type(value).__name__} to submodule {name!r}: "
                        "expected an nn.Module or None"
                    )
                modules[name] = None
                return
            if name in buffers:
                buffers[name] = None if value is None else self._as_buffer(name, value)
                return
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Called only when normal lookup fails, i.e. for registered entries.
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            if registry in d and name in d[registry]:
                return d[registry][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        if "_parameters" in self.__dict__ and any(name in r for r in self._registries()):
            self._forget(name)
        else:
            object.__delattr__(self, name)

    @staticmethod
    def _as_buffer(name: str, value: Any) -> Tensor:
        if isinstance(value, Parameter):
            raise TypeError(f"buffer {name!r}: got an nn.Parameter; use register_parameter")
        if not isinstance(value, (Tensor, mx.array)):
            raise TypeError(
                f"buffer {name!r} must be a Tensor, an mx.array or None; got {type(value).__name__}"
            )
        return value if isinstance(value, Tensor) else Tensor(value)

    def _check_new_name(self, kind: str, name: str) -> None:
        _check_name(kind, name)
        registered = any(name in registry for registry in self._registries())
        if not registered and hasattr(self, name):
            raise KeyError(f"{kind} name {name!r} clashes with an existing attribute")

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register ``param`` (or a ``None`` placeholder) under ``name``."""
        self._check_new_name("parameter", name)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"parameter {name!r} must be an nn.Parameter or None; got {type(param).__name__}"
            )
        self._put(self._parameters, name, param)

    def register_buffer(self, name: str, value: Any, persistent: bool = True) -> None:
        """Register a non-trainable tensor (``Tensor``, ``mx.array`` or ``None``) as state.

        Persistent buffers appear in :meth:`state_dict`; ``persistent=False`` keeps one out
        (e.g. a cached mask that can be rebuilt).
        """
        self._check_new_name("buffer", name)
        value = None if value is None else self._as_buffer(name, value)
        self._put(self._buffers, name, value)
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        """Register ``module`` (or a ``None`` placeholder) under ``name``."""
        self._check_new_name("module", name)
        if module is not None and not isinstance(module, Module):
            raise TypeError(
                f"module {name!r} must be an nn.Module or None; got {type(module).__name__}"
            )
        self._put(self._modules, name, module)

    register_module = add_module

    # ---------------------------------------------------------------- traversal

    def named_modules(
        self, memo: set[int] | None = None, prefix: str = ""
    ) -> Iterator[tuple[str, Module]]:
        """Yield ``(dotted_name, module)`` for this module and every descendant, each once."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        seen: set[int] = set()
        for name, child in self._modules.items():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self) -> Iterator[Module]:
        for _, child in self.named_children():
            yield child

    def _named_entries(
        self, registry: str, prefix: str, recurse: bool
    ) -> Iterator[tuple[str, Any]]:
        modules = self.named_modules(prefix=prefix) if recurse else iter([(prefix, self)])
        seen: set[int] = set()
        for mod_prefix, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), value

    def _all_named_modules(self, prefix: str) -> Iterator[tuple[str, Module]]:
        """Like named_modules, but a shared submodule is visited under every one of its names."""
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child._all_named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """Yield ``(dotted_name, parameter)`` in registration order, own entries first.

        A parameter shared by several modules is yielded once, under its first name.
        """
        yield from self._named_entries("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Tensor]]:
        """Yield ``(dotted_name, buffer)`` like :meth:`named_parameters` (non-persistent too)."""
        yield from self._named_entries("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, buf in self.named_buffers(recurse=recurse):
            yield buf

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call ``fn`` on every submodule (children first) and then on ``self``; return ``self``."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ---------------------------------------------------------------- modes and grads

    def train(self, mode: bool = True) -> Module:
        """Set ``training`` to ``mode`` on this module and all descendants; return ``self``."""
        if not isinstance(mode, bool):
            raise TypeError(f"train(): mode must be a bool; got {mode!r}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        """Same as ``train(False)``: e.g. Dropout becomes the identity."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's ``.grad``: to ``None`` (default) or to dense zeros."""
        for param in self.parameters():
            if set_to_none or param.grad is None:
                param.grad = None
            else:
                param.grad = Tensor(mx.zeros(param.shape, dtype=param.dtype))

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Set ``requires_grad`` on every parameter; return ``self``.

        ``model.requires_grad_(False)`` freezes a model (or ``layer.requires_grad_(False)``
        one part of it): a frozen parameter receives no ``.grad`` from ``backward()``, and an
        optimizer skips every parameter whose ``.grad`` is None.
        """
        if not isinstance(requires_grad, bool):
            raise TypeError(
                f"requires_grad_(): requires_grad must be a bool; got {requires_grad!r}"
            )
        for param in self.parameters():
            param.requires_grad = requires_grad
        return self

    # ---------------------------------------------------------------- dtypes

    def to(self, *args: Any, dtype: mx.Dtype | None = None) -> Module:
        """Cast every floating parameter and buffer (and dense ``.grad``) to ``dtype``, in
        place; return ``self``. Integer and bool buffers keep theirs, as in PyTorch.

        ``model.to(dtype)``, ``model.to(device)``, ``model.to(device, dtype)``: a device
        (``"cpu"``, ``"cuda"``, ``"mps"``, ``"gpu"``, optionally ``":0"``, or an
        ``mx.Device``) is accepted and ignored, since lucid has no devices. The Parameter
        objects stay the same; cast before building the optimizer, whose state takes the
        parameters' dtype when it is created.
        """
        target = _target_dtype(f"{type(self).__name__}.to()", args, dtype)
        if target is None:
            return self
        if not mx.issubdtype(target, mx.floating):
            raise TypeError(
                f"{type(self).__name__}.to(): a module casts to floating dtypes only; got {target}"
            )
        for param in self.parameters():
            if param.dtype != target:
                param.data = param.data.astype(target)
            if isinstance(param.grad, Tensor) and param.grad.dtype != target:
                param.grad = Tensor(param.grad.data.astype(target))
        for buf in self.buffers():
            if mx.issubdtype(buf.dtype, mx.floating) and buf.dtype != target:
                buf.data = buf.data.astype(target)
        return self

    def float(self) -> Module:
        """``self.to(lucid.float32)``."""
        return self.to(mx.float32)

    def half(self) -> Module:
        """``self.to(lucid.float16)``."""
        return self.to(mx.float16)

    # ---------------------------------------------------------------- state

    def _state_tensors(self) -> dict[str, Tensor]:
        """Every parameter and persistent buffer by dotted name; shared ones under each name."""
        state: dict[str, Tensor] = {}
        for prefix, module in self._all_named_modules(""):
            dot = f"{prefix}." if prefix else ""
            for name, param in module._parameters.items():
                if param is not None:
                    state[dot + name] = param
            for name, buf in module._buffers.items():
                if buf is not None and name not in module._non_persistent:
                    state[dot + name] = buf
        return state

    def state_dict(self) -> dict[str, mx.array]:
        """Map dotted names to arrays: parameters and persistent buffers, module by module.

        The arrays are the live (immutable) ``mx.array`` values, not copies. As in PyTorch, a
        parameter shared by two modules appears under both names.
        """
        return {name: t.data for name, t in self._state_tensors().items()}

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> IncompatibleKeys:
        """Copy ``state_dict``'s arrays into this module's parameters and buffers.

        Everything is checked before anything is written: missing keys and unexpected keys
        (when ``strict``), shape mismatches and unconvertible values (always) are reported
        together in one ``RuntimeError``, and the module is then left unchanged. Loading
        replaces each tensor's ``.data`` with the value cast to that tensor's dtype, so the
        same Parameter objects (and any optimizer holding them) stay valid.

        Values may be ``mx.array``, NumPy arrays, Tensors or anything :func:`lucid.tensor`
        accepts. Returns the missing and unexpected keys (both empty under ``strict``).
        """
        own = self._state_tensors()
        missing = [name for name in own if name not in state_dict]
        unexpected = [name for name in state_dict if name not in own]
        problems: list[str] = []
        if strict and missing:
            problems.append("missing key(s): " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected key(s): " + ", ".join(unexpected))

        loaded: dict[str, mx.array] = {}
        for name, target in own.items():
            if name not in state_dict:
                continue
            try:
                value = _to_array(state_dict[name])
            except TypeError:
                problems.append(f"{name}: cannot convert {type(state_dict[name]).__name__}")
                continue
            if tuple(value.shape) != target.shape:
                problems.append(
                    f"size mismatch for {name}: got shape {tuple(value.shape)}, "
                    f"expected {target.shape}"
                )
                continue
            loaded[name] = value

        if problems:
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n  "
                + "\n  ".join(problems)
            )
        for name, value in loaded.items():
            target = own[name]
            target.data = value if value.dtype == target.dtype else value.astype(target.dtype)
        return IncompatibleKeys(missing, unexpected)

    # ---------------------------------------------------------------- printing

    def extra_repr(self) -> str:
        """The text between the parentheses of this module's one-line repr."""
        return ""

    def __repr__(self) -> str:
        lines = [line for line in self.extra_repr().split("\n") if line]
        lines += [f"({name}): {_indent(repr(m), 2)}" for name, m in self._modules.items()]
        if not lines:
            return f"{type(self).__name__}()"
        if len(lines) == 1 and not self._modules:
            return f"{type(self).__name__}({lines[0]})"
        body = "\n".join("  " + line for line in lines)
        return f"{type(self).__name__}(\n{body}\n)"
