"""MLX parameter trees as lucid Parameters, and parameter groups chosen by predicate.

An ``mlx.nn`` model keeps its parameters in a *tree*: nested dicts and lists of
``mx.array`` (``model.trainable_parameters()``). ``mlx.utils.tree_flatten`` names each
leaf by its *path*, its keys joined by dots (``"layers.0.weight"``). A lucid optimizer
given a tree wraps each leaf in a :class:`~lucid.nn.Parameter`, in ``tree_flatten``
order, and remembers its path; everything else (the compiled step, buckets, state,
``state_dict``) then runs as for lucid's own parameters.

Three functions make the bridge:

- :func:`named_parameters`: a tree's leaves as ``{path: Parameter}``;
- :func:`apply_gradients`: one optimizer step from a gradient tree, read from and written
  back to trees, which ``Optimizer.apply_gradients`` and ``Optimizer.update`` call;
- :func:`param_groups`: parameter groups over a tree, a leaf going to the first rule whose
  predicate ``(path, array) -> bool`` holds.

A flat dict ``{path: array}`` is a tree too, whose ``tree_flatten`` gives the same paths:
that is what :func:`param_groups` puts in each group's ``"params"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import mlx.core as mx
import mlx.nn
from mlx.utils import tree_flatten

from ..nn.parameter import Parameter
from ..tensor import Tensor

if TYPE_CHECKING:
    from .optimizer import Optimizer

__all__ = ["Predicate", "is_tree", "named_parameters", "apply_gradients", "param_groups"]

Predicate = Callable[[str, mx.array], bool]


def is_tree(obj: Any) -> bool:
    """Whether ``obj`` is an MLX tree rather than lucid parameters: a dict (its values
    nested dicts, lists and arrays), as ``mlx.nn.Module.trainable_parameters()`` returns.
    A bare list of arrays is not taken for one: given where lucid Parameters are
    expected, it is far more often a mistake, and refused as such."""
    return isinstance(obj, dict)


def _refuse_module(obj: Any, where: str) -> None:
    if isinstance(obj, mlx.nn.Module):
        raise TypeError(
            f"{where}: expected a parameter tree; got a {type(obj).__name__} (an mlx.nn.Module). "
            "Did you mean model.trainable_parameters()?"
        )


def _leaves(tree: Any, where: str, what: str) -> list[tuple[str, mx.array]]:
    """``tree_flatten(tree)``, every leaf checked to be an ``mx.array``."""
    _refuse_module(tree, where)
    flat = tree_flatten(tree)
    for path, leaf in flat:
        if not isinstance(leaf, mx.array):
            raise TypeError(
                f"{where}: {what} {path!r} is a {type(leaf).__name__}; expected an mx.array"
            )
    return flat


def named_parameters(tree: Any, where: str) -> dict[str, Parameter]:
    """The leaves of ``tree`` as ``{path: Parameter}``, in ``tree_flatten`` order. Each
    Parameter holds the leaf itself (no copy). Raises ``TypeError`` naming the path of a
    leaf that is not a floating ``mx.array``, and ``ValueError`` for an empty tree."""
    flat = _leaves(tree, where, "the leaf")
    if not flat:
        raise ValueError(f"{where}: the parameter tree has no arrays; expected parameters")
    for path, leaf in flat:
        if not mx.issubdtype(leaf.dtype, mx.floating):
            raise TypeError(
                f"{where}: the leaf {path!r} has dtype {leaf.dtype}; an optimizer needs "
                "floating parameters (leave it out of the tree, or freeze it in the model)"
            )
    return {path: Parameter(leaf) for path, leaf in flat}


def apply_gradients(opt: Optimizer, gradients: Any, parameters: Any, *,
                    into_model: bool = False) -> Any:  # fmt: skip
    """One step of ``opt`` from the gradient tree ``gradients``; the new parameters as a
    tree shaped like ``gradients``.

    Each gradient's path names the Parameter it belongs to (one of ``opt``'s tree
    parameters). The Parameter first takes the array found at that path in ``parameters``
    (a tree, or an ``mlx.nn.Module``) when it is not the array it holds already: the
    model's values were changed outside the optimizer (``model.update``,
    ``model.load_weights``). Then each gets its gradient and ``opt.step()`` runs; leaves
    missing from ``gradients`` are not updated, as when a lucid Parameter has no ``grad``.

    Everything is checked before anything changes; an error names the path. When the
    step itself raises, every Parameter gets its array and gradient back.
    """
    name = f"{type(opt).__name__}.apply_gradients"
    if not isinstance(gradients, (dict, list, tuple)):
        raise TypeError(
            f"{name}: gradients must be a tree of arrays (as mlx.nn.value_and_grad returns); "
            f"got {type(gradients).__name__}"
        )
    walk = _Walk(name, opt._paths, parameters)
    root = [walk.tree(gradients, parameters, "")]
    if isinstance(gradients, tuple):
        walk.tuples.append((root, 0))
    saved = [(p, p.data, p.grad) for p, *_ in walk.leaves]
    try:
        for p, value, g, _, _ in walk.leaves:
            if p.data is not value:  # assigning bumps the version: buckets re-form
                p.data = value
            p.grad = Tensor(g)
        opt.step()
    except BaseException:
        for p, data, grad in saved:
            if p.data is not data:
                p.data = data
            p.grad = grad
        raise
    if into_model and _write_into(walk):
        return None
    for p, _, _, out, key in walk.leaves:
        out[key] = p.data
        p.grad = None  # the gradient tree is the caller's; hold no reference to it
    for container, key in walk.tuples:  # children first: they were appended first
        container[key] = tuple(container[key])
    return root[0]


_MISSING = object()


def _write_into(walk: _Walk) -> bool:
    """Write each new parameter into the model's own container, where the walk found the
    old one (what ``model.update`` does for an array, without its second walk over the
    whole model: ~0.3 ms of a 4 ms step on 256 arrays). ``False``, writing nothing, when
    some leaf's container is unknown (then the caller updates through a tree)."""
    if any(c is None or not isinstance(c, (dict, list)) for c in walk.parents):
        return False
    for (p, _, _, _, key), container in zip(walk.leaves, walk.parents, strict=True):
        container[key] = p.data
        p.grad = None
    return True


def _child(node: Any, key: str | int) -> Any:
    if isinstance(node, dict):
        return node.get(key, _MISSING)
    if isinstance(node, (list, tuple)) and isinstance(key, int) and key < len(node):
        return node[key]
    return _MISSING


class _Walk:
    """One walk over the gradient tree and, beside it, the parameters (an
    ``mlx.nn.Module`` is a dict of its arrays and submodules): each gradient with its
    Parameter and the parameter's current array, and the output tree, shaped like the
    gradients, with the slot ``(container, key)`` of each leaf. (Measured on the
    256-array model of ``benchmarks/mlx_models.py``, MLX 0.32 CPU, best of 7: this one
    walk takes 0.27 ms, where ``tree_flatten`` of the gradients and of
    ``model.parameters()`` and ``tree_map_with_path`` for the output took 0.85 ms.)"""

    def __init__(self, name: str, known: dict[str, Parameter], parameters: Any) -> None:
        self.name, self.known, self.parameters = name, known, parameters
        self.leaves: list[tuple[Parameter, mx.array, mx.array, Any, str | int]] = []
        self.tuples: list[tuple[Any, str | int]] = []  # lists in the output to make tuples
        self.parents: list[Any] = []  # each leaf's container in the parameters, if found
        self._flat: dict[str, Any] | None = None

    def tree(self, grads: Any, params: Any, prefix: str) -> Any:
        out: Any = {} if isinstance(grads, dict) else [None] * len(grads)
        for key, g in grads.items() if isinstance(grads, dict) else enumerate(grads):
            path = f"{prefix}{key}"
            node = _child(params, key)
            if isinstance(g, (dict, list, tuple)):
                out[key] = self.tree(g, node, path + ".")
                if isinstance(g, tuple):
                    self.tuples.append((out, key))
            else:
                self.leaf(path, g, node, out, key)
                self.parents.append(params if node is not _MISSING else None)
        return out

    def leaf(self, path: str, g: Any, node: Any, out: Any, key: str | int) -> None:
        name = self.name
        if not isinstance(g, mx.array):
            raise TypeError(
                f"{name}: gradients: {path!r} is a {type(g).__name__}; expected an mx.array"
            )
        p = self.known.get(path)
        if p is None:
            some = ", ".join(repr(k) for k in list(self.known)[:3])
            raise ValueError(
                f"{name}: gradients has {path!r}, which is not one of the optimizer's "
                f"{len(self.known)} tree parameters (such as {some}); "
                "was the optimizer built from this model's trainable_parameters()? (A "
                "parameter unfrozen since joins with opt.add_param_group({'params': "
                "{path: array}}).)"
            )
        value = node if isinstance(node, mx.array) else self.lookup(path)
        if not isinstance(value, mx.array):
            raise ValueError(f"{name}: gradients has {path!r}; the parameters have no such leaf")
        if g.shape != value.shape or g.dtype != value.dtype:
            raise ValueError(
                f"{name}: the gradient {path!r} has shape {tuple(g.shape)} and dtype {g.dtype}; "
                f"the parameter has {tuple(value.shape)} and {value.dtype}"
            )
        self.leaves.append((p, value, g, out, key))

    def lookup(self, path: str) -> Any:
        """The parameters' leaf at ``path`` when the walk cannot reach it (a flat
        ``{path: array}`` tree): found in ``tree_flatten`` of the parameters."""
        if self._flat is None:
            tree = self.parameters
            if isinstance(tree, mlx.nn.Module):
                tree = tree.parameters()
            self._flat = dict(tree_flatten(tree)) if isinstance(tree, (dict, list, tuple)) else {}
        return self._flat.get(path)


def param_groups(
    tree: Any, rules: Sequence[tuple[Predicate, Mapping[str, Any]]]
) -> list[dict[str, Any]]:
    """Parameter groups over an MLX tree, chosen by predicates on each leaf.

    Each leaf goes to the group of the first rule whose ``predicate(path, array)`` is true
    (``path`` as ``mlx.utils.tree_flatten`` names it, such as ``"layers.0.bias"``), with
    that rule's hyperparameters; the leaves no rule takes form a first group with the
    optimizer's defaults. Each group's ``"params"`` is a flat tree ``{path: array}``, in
    the tree's order, and the list is what an optimizer takes as ``params``. A group
    that would be empty is left out (so with every leaf taken by a rule, the rules'
    groups come first); a rule that takes no leaf at all raises ``ValueError``, as a
    misspelt key would.

    Example, no weight decay on biases and norms (their parameters are the 1-D ones)::

        groups = lucid.optim.param_groups(
            model.trainable_parameters(), [(lambda path, a: a.ndim < 2, {"weight_decay": 0.0})]
        )
        opt = lucid.optim.AdamW(groups, lr=1e-3, weight_decay=0.1)
        ...
        opt.update(model, grads)
    """
    where = "param_groups"
    flat = _leaves(tree, where, "the leaf")
    if not flat:
        raise ValueError(f"{where}: the parameter tree has no arrays; expected parameters")
    if isinstance(rules, Mapping) or not isinstance(rules, Sequence):
        raise TypeError(
            f"{where}: rules must be a list of (predicate, hyperparameters) pairs; got "
            f"{type(rules).__name__}"
        )
    for i, rule in enumerate(rules):
        if not (isinstance(rule, tuple) and len(rule) == 2):
            raise TypeError(f"{where}: rules[{i}] must be a (predicate, dict) pair; got {rule!r}")
        predicate, hyper = rule
        if not callable(predicate):
            raise TypeError(f"{where}: rules[{i}]'s predicate must be callable; got {predicate!r}")
        if not isinstance(hyper, Mapping) or "params" in hyper:
            raise TypeError(
                f"{where}: rules[{i}]'s hyperparameters must be a dict without 'params'; "
                f"got {hyper!r}"
            )
    default: dict[str, mx.array] = {}
    taken: list[dict[str, mx.array]] = [{} for _ in rules]
    for path, leaf in flat:
        for i, (predicate, _) in enumerate(rules):
            if predicate(path, leaf):
                taken[i][path] = leaf
                break
        else:
            default[path] = leaf
    for i, chosen in enumerate(taken):
        if not chosen:
            raise ValueError(f"{where}: rules[{i}] takes no parameter of the tree; drop it")
    groups = [{"params": default}] if default else []
    groups += [{"params": chosen, **hyper} for chosen, (_, hyper) in zip(taken, rules, strict=True)]
    return groups
