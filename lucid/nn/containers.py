"""Containers: modules that hold other modules (Sequential, ModuleList, ModuleDict).

Each stores its members in the ordinary submodule registry, so their parameters are found
by ``parameters()`` and named ``"0.weight"``, ``"block.bias"`` and so on, as in PyTorch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, overload

from .module import Module

__all__ = ["Sequential", "ModuleList", "ModuleDict"]


def _check_module(owner: str, value: Any) -> Module:
    if not isinstance(value, Module):
        raise TypeError(f"{owner}: expected an nn.Module; got {type(value).__name__}")
    return value


class _IndexedModules(Module):
    """Shared by Sequential and ModuleList: members named "0", "1", ... in order."""

    def _index(self, idx: int) -> str:
        if not isinstance(idx, int):
            raise TypeError(f"{type(self).__name__} index must be an int; got {idx!r}")
        n = len(self._modules)
        if not -n <= idx < n:
            raise IndexError(f"{type(self).__name__} index {idx} is out of range for length {n}")
        return str(idx % n)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __setitem__(self, idx: int, module: Module) -> None:
        self._modules[self._index(idx)] = _check_module(type(self).__name__, module)

    def append(self, module: Module) -> _IndexedModules:
        """Add ``module`` at the end; return ``self``."""
        self.add_module(str(len(self)), _check_module(type(self).__name__, module))
        return self

    def extend(self, modules: Iterable[Module]) -> _IndexedModules:
        for module in modules:
            self.append(module)
        return self


class Sequential(_IndexedModules):
    """Chain modules: ``Sequential(a, b, c)(x) == c(b(a(x)))``.

    Members come as positional modules (named "0", "1", ...) or as one mapping from names to
    modules. Indexing with an int gives a member, with a slice a new Sequential sharing them.
    """

    def __init__(self, *modules: Module | Mapping[str, Module]) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], Mapping):
            for name, module in modules[0].items():
                self.add_module(name, _check_module("Sequential", module))
        else:
            for module in modules:
                self.append(module)  # type: ignore[arg-type]

    @overload
    def __getitem__(self, idx: int) -> Module: ...
    @overload
    def __getitem__(self, idx: slice) -> Sequential: ...
    def __getitem__(self, idx: int | slice) -> Module:
        if isinstance(idx, slice):
            return Sequential(dict(list(self._modules.items())[idx]))
        return list(self._modules.values())[int(self._index(idx))]

    def __setitem__(self, idx: int, module: Module) -> None:
        name = list(self._modules)[int(self._index(idx))]
        self._modules[name] = _check_module("Sequential", module)

    def forward(self, x: Any) -> Any:
        for module in self._modules.values():
            x = module(x)
        return x


class ModuleList(_IndexedModules):
    """A list of modules whose parameters are registered; it has no ``forward`` of its own."""

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.extend(modules)

    @overload
    def __getitem__(self, idx: int) -> Module: ...
    @overload
    def __getitem__(self, idx: slice) -> ModuleList: ...
    def __getitem__(self, idx: int | slice) -> Module:
        if isinstance(idx, slice):
            return ModuleList(list(self._modules.values())[idx])
        return self._modules[self._index(idx)]


class ModuleDict(Module):
    """A dict of modules (insertion-ordered) whose parameters are registered; no ``forward``.

    Keys must be strings without '.' that do not clash with Module attributes (e.g. "train").
    """

    def __init__(self, modules: Mapping[str, Module] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, _check_module("ModuleDict", module))

    def __delitem__(self, key: str) -> None:
        del self._modules[key]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __contains__(self, key: object) -> bool:
        return key in self._modules

    def keys(self) -> Iterable[str]:
        return self._modules.keys()

    def values(self) -> Iterable[Module]:
        return self._modules.values()

    def items(self) -> Iterable[tuple[str, Module]]:
        return self._modules.items()

    def update(self, modules: Mapping[str, Module]) -> None:
        for key, module in modules.items():
            self[key] = module
