"""Optimizer: the public API every update rule shares, and the interface a rule fills in.

A rule is a subclass that supplies small pieces (see :class:`lucid.optim.Adagrad` or
:class:`lucid.optim.SGD` for complete ones, each a few dozen lines):

- ``checks``: one check per hyperparameter (``lucid/optim/checks.py``), and optionally
  ``check_group(group)`` for rules between them;
- ``init_state(param, group) -> dict``: the state of a new parameter besides ``"step"``
  (its arrays may have any shape; their shapes are what the step and ``load_state_dict``
  validate against);
- ``step_hyperparameters(group, t) -> dict``: the numbers the rule needs at step ``t``
  (from 1), computed on the host in float64, as torch computes them; they enter the
  compiled step as float32 scalar arrays, so new values never retrace;
- ``static_config(group) -> dict``: the flags that change the traced graph (and the state's
  keys), each distinct value compiled once;
- ``rule(param, grad, state, hyper, **static) -> (param, state)``: a pure function on
  ``mx.array`` s, one step of one parameter;
- optionally ``rule_rows(...)`` for row-sparse gradients (``supports_sparse = True``);
- ``elementwise = True`` when the rule acts elementwise and every state array is shaped
  like its parameter: then small parameters may share flat buckets (``buckets.py``).

The machinery lives beside this file, one job per file: ``counters.py`` (step counts),
``buckets.py`` (flat buckets), ``kernels.py`` (kernel boundaries, streams), ``compiled.py``
(the compiled group steps and their cache), ``sparse_step.py`` (row-sparse gradients),
``state_dict.py`` (PyTorch's state layout) and ``trees.py`` (MLX parameter trees as
Parameters, for ``mlx.nn`` models). This file owns parameter groups, validation and
the order of a step: check everything, compute every group's update (one compiled call
each), write the results back, then evaluate them all with one ``mx.eval``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from typing import Any

import mlx.core as mx
import mlx.nn

from .. import bounds, compilation
from ..nn.module import Module
from ..nn.parameter import Parameter
from ..sparse import SparseGrad
from ..tensor import Tensor
from . import checks, state_dict, trees
from .buckets import SMALL, Buckets
from .compiled import CompiledSteps, dense_group_step
from .counters import is_interned, step_array, step_value
from .kernels import job_streams
from .sparse_step import looked_up, sparse_group_step, sparse_inputs
from .state_dict import SCHEDULER_KEYS

__all__ = ["Optimizer"]

State = dict[str, mx.array]
Hyper = dict[str, mx.array]

_FLOATING = (mx.float32, mx.float16, mx.bfloat16, mx.float64)


class Optimizer:
    """Base class: holds ``param_groups`` and ``state`` and runs the compiled step.

    Args:
        params: an iterable of :class:`~lucid.nn.Parameter`, or of dicts (parameter
            groups) each with ``"params"`` and optional hyperparameters that override
            ``defaults`` for that group; or an MLX parameter tree (nested dicts and lists
            of ``mx.array``, as ``mlx_model.trainable_parameters()`` returns), also as a
            group's ``"params"`` (see :func:`lucid.optim.param_groups`).
        defaults: hyperparameter names and their default values.

    Each leaf of a tree is wrapped in a :class:`~lucid.nn.Parameter` (holding the same
    array), in ``mlx.utils.tree_flatten`` order and known by its path; such an optimizer
    also has MLX's :meth:`update` and :meth:`apply_gradients` (see ``trees.py``).
    """

    #: one check per hyperparameter (see checks.py)
    checks: dict[str, checks.Check] = {}
    #: whether ``rule`` is elementwise and all state is shaped like its parameter, so that
    #: it may run on many small parameters concatenated into one flat array (buckets.py)
    elementwise: bool = False
    #: whether the rule has ``rule_rows``, the step for a row-sparse gradient
    supports_sparse: bool = False
    #: whether dense gradients are accepted (torch's SparseAdam takes sparse ones only)
    supports_dense: bool = True

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        name = type(self).__name__
        self.defaults = dict(defaults)
        checks.run(name, self.checks, self.defaults)
        self.check_group(self.defaults)
        self.param_groups: list[dict[str, Any]] = []
        self._state: dict[Parameter, State] = {}
        self._buckets = Buckets()
        self._compiled = CompiledSteps(name)
        self._templates: dict[tuple, dict[str, tuple[int, ...]]] = {}
        self._validated: dict[int, tuple] = {}  # id(group) -> (values, static, signature)
        self._hyper_memo: dict[int, dict] = {}  # id(group) -> {name: (number, array)}
        # id(param) -> its shape, for a parameter whose state this optimizer's last step
        # wrote and nobody could touch since (reading .state, loading, or a new group
        # forgets them all): such a parameter is ready when its grad matches its .data
        self._fresh: dict[int, tuple[int, ...]] = {}
        self._paths: dict[str, Parameter] = {}  # the tree parameters, by path
        for group in _groups(name, params):
            self.add_param_group(group)

    # ------------------------------------------------------------------ rule interface
    def init_state(self, param: mx.array, group: dict[str, Any]) -> State:
        """The state of a new parameter, besides its step counter."""
        return {}

    def step_hyperparameters(self, group: dict[str, Any], t: int) -> dict[str, float]:
        """The numbers the rule needs at step ``t`` (from 1), computed on the host in
        float64. ``group["lr"]`` is already a number here (a schedule is resolved)."""
        raise NotImplementedError

    def static_config(self, group: dict[str, Any]) -> dict[str, Any]:
        """Flags that change the traced graph; each distinct value gets its own trace."""
        return {}

    def check_group(self, group: dict[str, Any]) -> None:
        """Raise ``ValueError`` when hyperparameters conflict (each is valid alone)."""

    @staticmethod
    def rule(param: mx.array, grad: mx.array, state: State, hyper: Hyper,
             **static: Any) -> tuple[mx.array, State]:  # fmt: skip
        """One step of one parameter; ``hyper`` is :meth:`step_hyperparameters` as arrays."""
        raise NotImplementedError

    @staticmethod
    def rule_rows(param: mx.array, index: mx.array, grad: mx.array, valid: mx.array,
                  param_rows: mx.array, state: State, hyper: Hyper,
                  **static: Any) -> tuple[mx.array, State]:  # fmt: skip
        """One step of one parameter from a coalesced row-sparse gradient: ``grad[i]`` is
        the gradient of row ``index[i]`` where ``valid[i]`` (other rows are padding and
        must change nothing); ``param_rows`` is ``param[index]``. Only rules that set
        ``supports_sparse`` define it."""
        raise NotImplementedError

    # ------------------------------------------------------------------ state
    @property
    def trace_count(self) -> int:
        """How many times a step function of this optimizer has been traced."""
        return self._compiled.trace_count

    @property
    def state(self) -> dict[Parameter, State]:
        """Per-parameter state, ``{"step": ..., **rule state}``, keyed by Parameter.

        Reading it unpacks the flat buckets of small parameters into per-parameter arrays
        (no-copy slices, evaluated here; the next step packs them again, so reading it
        every step costs a repack). A step replaces each parameter's state dict, so read
        ``optimizer.state`` again after a step rather than holding on to it.
        """
        self._fresh.clear()
        if self._buckets:
            mx.eval(self._buckets.unpack(self._state))
            # in the order of the parameters, as before the buckets took them
            order = {p: self._state.pop(p) for p in self._all_params() if p in self._state}
            self._state = {**order, **self._state}
        for s in self._state.values():  # the interned counters stay private: `+=` on an
            if is_interned(s.get("step")):  # mx.array writes in place
                s["step"] = mx.array(float(step_value(s["step"])), dtype=mx.float32)
        return self._state

    @state.setter
    def state(self, value: dict[Parameter, State]) -> None:
        self._fresh.clear()
        self._buckets.unpack(self._state)
        self._state = value

    def state_dict(self) -> dict[str, Any]:
        """PyTorch's layout: ``{"state": {i: {...}}, "param_groups": [{..., "params": [i]}]}``.

        Parameters are numbered in order across groups. Neither later steps nor edits of
        the returned dict reach the other side. A schedule given as ``lr`` is saved as its
        current value (the schedule itself is code).
        """
        return state_dict.build(self)

    def load_state_dict(self, state_dict_: dict[str, Any]) -> None:
        """Load a :meth:`state_dict`. Everything is validated first; on any error a
        ``ValueError`` names the group, the index and the key, and nothing changes.
        Floating state is cast to its parameter's dtype. Keys that torch's schedulers
        write into groups (``initial_lr``, ...) are restored; a schedule given as ``lr``
        to this optimizer is kept."""
        state_dict.load(self, state_dict_)

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters, with hyperparameters overriding ``defaults``.

        Works at any time; the new parameters get their state at once, so a later step
        finds it. Nothing changes when the group is rejected.
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"add_param_group: expected a dict; got {type(param_group).__name__}")
        params = param_group.get("params")
        if params is None:
            raise ValueError("add_param_group: the group has no 'params' key")
        index = len(self.param_groups)
        named: dict[str, Parameter] = {}
        if trees.is_tree(params):
            named = trees.named_parameters(params, f"{type(self).__name__}: param group {index}")
            params = list(named.values())
            for path in named:
                if path in self._paths:
                    raise ValueError(
                        f"param group {index}: the tree leaf {path!r} is already in another "
                        "parameter group"
                    )
        else:
            params = _param_list(type(self).__name__, params, f"param group {index}")
        if not params:
            raise ValueError(f"param group {index}: 'params' is empty; expected parameters")
        seen_here: set[int] = set()
        taken = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            where = f"param group {index}, params[{i}]"
            if not isinstance(p, Parameter):
                raise TypeError(f"{where}: expected an nn.Parameter; got {type(p).__name__}")
            if not mx.issubdtype(p.dtype, mx.floating):
                raise TypeError(f"{where}: an optimizer needs floating parameters; got {p.dtype}")
            if id(p) in seen_here:
                raise ValueError(f"{where}: appears twice in the group")
            if id(p) in taken:
                raise ValueError(f"{where}: already in another parameter group")
            seen_here.add(id(p))
        unknown = sorted(set(param_group) - set(self.defaults) - {"params", *SCHEDULER_KEYS})
        if unknown:
            raise ValueError(
                f"param group {index}: unknown hyperparameter(s) {unknown}; "
                f"expected some of {sorted(self.defaults)}"
            )
        group = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        group["params"] = params
        self._check_group(f"param group {index}", group)
        new_state = {p: {"step": step_array(0), **self.init_state(p.data, group)} for p in params}
        self._fresh.clear()
        self.param_groups.append(group)
        self._state.update(new_state)
        self._paths.update(named)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's gradient (to ``None``, or to zeros).

        A row-sparse gradient is cleared to ``None`` either way: zeros would be a dense
        table-sized gradient, and the next backward would add into it densely.
        """
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None or isinstance(p.grad, SparseGrad):
                    p.grad = None
                else:
                    p.grad = Tensor(mx.zeros(p.shape, dtype=p.dtype))

    # ------------------------------------------------------------------ MLX models
    def update(self, model: Any, gradients: Any) -> None:
        """Step an ``mlx.nn`` model from its gradient tree (``mlx.nn.value_and_grad``) and
        write the new parameters into it, as ``mlx.optimizers.Optimizer.update`` does:
        ``model.update(self.apply_gradients(gradients, model))``. The optimizer must have
        been built from the model's tree (``model.trainable_parameters()``)."""
        if not isinstance(gradients, (dict, list, tuple)) or not isinstance(model, mlx.nn.Module):
            model.update(self.apply_gradients(gradients, model))  # its errors, as MLX's
            return
        new = trees.apply_gradients(self, gradients, model, into_model=True)
        if new is not None:  # some leaf was not found in place: through a tree
            model.update(new)

    def apply_gradients(self, gradients: Any, parameters: Any) -> Any:
        """One step from the gradient tree ``gradients``, starting from the values in
        ``parameters`` (a tree, or an ``mlx.nn.Module``); return the new parameters as a
        tree shaped like ``gradients``, as ``mlx.optimizers.Optimizer.apply_gradients``
        does. Errors name the path; a failed call changes nothing (``trees.py``)."""
        return trees.apply_gradients(self, gradients, parameters)

    # ------------------------------------------------------------------ the step
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; return ``closure()`` if given.

        Everything is checked before anything changes. Then each group makes one call of
        its compiled update, all results are written back, and one ``mx.eval`` runs over
        all new arrays together. (A second, small evaluation comes first when some index
        was checked lazily (``lucid/bounds.py``) or a gradient is row-sparse (its
        looked-up rows: see ``sparse_step.py``).) Inside :func:`lucid.compile`, the same
        rule runs on the traced arrays instead (``lucid/compilation.py``).
        """
        trace = compilation.active()
        if trace is not None:  # inside lucid.compile: the rule on tracers, no evaluation
            return trace.optimizer_step(self, closure)
        loss = closure() if closure is not None else None
        plans = [self._plan(i, group) for i, group in enumerate(self.param_groups)]
        # one small evaluation, only when needed, before anything changes: the lazy index
        # checks (lucid.bounds; a bad index raises here) and the rows that row-sparse
        # gradients looked up (see sparse_step.py)
        lookups = looked_up(p for plan in plans for p in plan.sparse)
        bounds.check_pending(*lookups, at="optimizer.step()")
        for plan in plans:  # everything is checked: first states made at this step
            self._state.update(plan.reinit)
        commits = []
        for plan in plans:
            if plan.dense:
                commits.append(self._dense(plan))
            if plan.sparse:
                commits.append(self._sparse(plan))
        del plans
        new_arrays = [a for commit in commits for a in commit()]
        if new_arrays:
            mx.eval(new_arrays)
        return loss

    def _plan(self, index: int, group: dict[str, Any]) -> _Plan:
        """Validate one group for a step; list its parameters that have a gradient and
        make the hyperparameters of every step count among them (a schedule is called
        here, so a bad value it returns also stops the step before any change)."""
        where = f"param group {index}"
        static, signature = self._group_config(where, group)
        dense, sparse, steps = [], [], set()
        held = self._buckets.held
        fresh = self._fresh
        dense_ok = self.supports_dense
        reinit: dict[Parameter, State] = {}
        for i, p in enumerate(group["params"]):
            g = p.grad
            if g is None:
                continue
            # the steady state, checked inline: a bucketed parameter, or one whose state the
            # last step wrote (``_fresh``), is ready when its grad matches its .data and the
            # shape it stepped with. This loop runs for every parameter every step (10,000
            # tensors: 47 ms a step through the general check below, 9 ms inline)
            if type(g) is Tensor and dense_ok:
                bucket = held.get(id(p))
                shape = bucket[0].shapes[bucket[1]] if bucket is not None else fresh.get(id(p))
                if shape is not None:
                    data, grad = p.data, g.data
                    if (
                        grad.shape == shape == data.shape
                        and grad.dtype == data.dtype
                        and data.dtype in _FLOATING
                    ):
                        dense.append(p)
                        steps.add((bucket[0].step if bucket else self._step_of(p)) + 1)
                        continue
            if not self._ready(p, g, signature, group):  # cheap; the explanation on failure
                first = self._first_state(p, g, signature, group)
                if first is None:
                    self._refuse(f"{where}, params[{i}]", p, g, signature, group)
                reinit[p] = first
            (sparse if isinstance(g, SparseGrad) else dense).append(p)
            steps.add(self._step_of(p) + 1)
        hypers = {t: self._hyperparameters(where, group, t) for t in sorted(steps)}
        return _Plan(index, group, static, dense, sparse, hypers, reinit)

    def _first_state(self, p: Parameter, g: Any, signature: tuple,
                     group: dict[str, Any]) -> State | None:  # fmt: skip
        """A new state for a parameter that has never stepped and whose state no longer
        fits the group (a scheduler set ``momentum`` after the optimizer was built, or
        ``.data`` was replaced), made as torch makes state: at the first step, from the
        group as it is then. ``None`` when the parameter has stepped, or the new state
        would not fit either (the gradient is wrong)."""
        old = self._state.get(p)
        if old is None or p in self._buckets:
            return None
        step = old.get("step")
        if not isinstance(step, mx.array) or step.size != 1 or step_value(step) != 0:
            return None
        if not mx.issubdtype(p.dtype, mx.floating):
            return None
        new = {"step": step_array(0), **self.init_state(p.data, group)}
        self._state[p] = new
        try:
            ok = self._ready(p, g, signature, group)
        finally:
            self._state[p] = old  # the step puts it in place once everything is checked
        return new if ok else None

    def _group_config(self, where: str, group: dict[str, Any]) -> tuple[dict[str, Any], tuple]:
        """Validate ``group``; return its static config and signature.

        Memoised on the group's values other than ``lr``: the full checks and the config
        cost ~5 µs a group, against ~11 µs for a whole compiled ``mlx.optimizers`` update
        of one small tensor. The memo holds the values last validated (lists copied, so an
        edit in place of ``betas`` is seen) and is compared as a dict, in C; any changed
        value misses it and is checked in full. ``lr`` changes every step under a
        scheduler, so it is checked on its own.
        """
        memo = self._validated.get(id(group))
        if memo is not None:
            values, static, signature = memo
            values["params"], values["lr"] = group.get("params"), group.get("lr")
            if _equal(values, group):
                lr = group.get("lr")
                if not (type(lr) is float and 0.0 <= lr < math.inf) and "lr" in self.checks:
                    checks.run(type(self).__name__, {"lr": self.checks["lr"]}, group, where)
                return static, signature
        self._check_group(where, group)
        self._fresh.clear()  # a new config may expect other state
        static = self.static_config(group)
        signature = (type(self), tuple(sorted(static.items())))
        values = {k: list(v) if type(v) is list else v for k, v in group.items()}
        self._validated[id(group)] = (values, static, signature)
        return static, signature

    def _check_group(self, where: str, group: dict[str, Any]) -> None:
        checks.run(type(self).__name__, self.checks, group, where)
        try:
            self.check_group(group)
        except ValueError as e:
            raise ValueError(f"{where}: {type(self).__name__}: {e}") from None

    def _hyperparameters(self, where: str, group: dict[str, Any], t: int) -> Hyper:
        values = group
        if callable(group["lr"]):
            lr = self._current_lr(group, t)
            checks.run(type(self).__name__, {"lr": checks.NON_NEGATIVE},
                       {"lr": lr}, f"{where}: the schedule at step {t - 1}")  # fmt: skip
            values = {**group, "lr": lr}
        numbers = self.step_hyperparameters(values, t)
        # a value's array is reused while the value stays the same (eps, or a constant lr):
        # each new scalar array costs ~0.5 µs of a small step; the arrays are only read
        memo = self._hyper_memo.setdefault(id(group), {})
        arrays = {}
        for k, v in numbers.items():
            found = memo.get(k)
            if found is None or found[0] != v or type(found[0]) is not type(v):
                found = memo[k] = (v, mx.array(v, dtype=mx.float32))
            arrays[k] = found[1]
        return arrays

    def _current_lr(self, group: dict[str, Any], t: int | None = None) -> float:
        """The learning rate at step ``t``: a schedule is called with ``t - 1`` (0 on a
        parameter's first update, as MLX calls it with its step counter). Without ``t``,
        the value for the group's next step."""
        lr = group["lr"]
        if not callable(lr):
            return lr
        if t is None:
            t = min((self._step_of(p) for p in group["params"]), default=0) + 1
        value = lr(t - 1)
        return value.item() if isinstance(value, mx.array) else value

    def _step_of(self, p: Parameter) -> int:
        if p in self._buckets:
            return self._buckets.step_of(p)
        return step_value(self._state[p]["step"])

    # ------------------------------------------------------------------ readiness
    def _template(self, signature: tuple, shape: tuple, dtype: mx.Dtype,
                  group: dict[str, Any]) -> dict[str, tuple[int, ...]]:  # fmt: skip
        """The keys and shapes the state of a ``shape`` parameter must have."""
        key = (signature, shape, dtype)
        found = self._templates.get(key)
        if found is None:
            made = self.init_state(mx.zeros(shape, dtype=dtype), group)
            found = self._templates[key] = {"step": (), **{k: v.shape for k, v in made.items()}}
        return found

    def _ready(self, p: Parameter, g: Any, signature: tuple, group: dict[str, Any]) -> bool:
        """Whether ``p`` can step with gradient ``g`` (see :meth:`_refuse` for the rules)."""
        data = p.data
        if data.dtype not in _FLOATING:
            return False
        if isinstance(g, SparseGrad):
            if not self.supports_sparse or g.shape != data.shape or g.dtype != data.dtype:
                return False
        elif (
            not (self.supports_dense and isinstance(g, Tensor))
            or g.data.shape != data.shape
            or g.data.dtype != data.dtype
        ):
            return False
        if p in self._buckets:
            return self._buckets.shape_of(p) == data.shape
        state = self._state.get(p)
        if state is None:
            return False
        template = self._template(signature, data.shape, data.dtype, group)
        return state.keys() == template.keys() and all(
            isinstance(v, mx.array) and v.shape == template[k] for k, v in state.items()
        )

    def _refuse(self, where: str, p: Parameter, g: Any, signature: tuple,
                group: dict[str, Any]) -> None:  # fmt: skip
        """Raise the error that says why :meth:`_ready` refused ``p``."""
        name = type(self).__name__
        if not mx.issubdtype(p.dtype, mx.floating):  # its .data was replaced since
            raise TypeError(f"{where}: an optimizer needs floating parameters; got {p.dtype}")
        if isinstance(g, SparseGrad):
            if not self.supports_sparse:
                raise TypeError(
                    f"{where}: {name} does not support sparse gradients (got a SparseGrad "
                    f"of shape {g.shape}); use Adagrad, SGD, Adam or SparseAdam, or build "
                    "the embedding with sparse=False"
                )
        elif not isinstance(g, Tensor):
            raise TypeError(f"{where}: grad must be a Tensor; got {type(g).__name__}")
        elif not self.supports_dense:
            raise TypeError(
                f"{where}: {name} takes row-sparse gradients only (nn.Embedding(sparse=True)); "
                "got a dense gradient. Use Adam for dense parameters"
            )
        if g.shape != p.shape:
            raise ValueError(f"{where}: grad has shape {g.shape}, parameter has {p.shape}")
        if g.dtype != p.dtype:
            raise ValueError(f"{where}: grad has dtype {g.dtype}, parameter has {p.dtype}")
        if p in self._buckets:
            shapes = {"bucket": self._buckets.shape_of(p)}
            expected = {"bucket": p.shape}
        elif p in self._state:
            state = self._state[p]
            template = self._template(signature, p.shape, p.dtype, group)
            if state.keys() != template.keys():
                raise ValueError(
                    f"{where}: its state has keys {sorted(state)}; {name} with this group's "
                    f"options expects {sorted(template)} (an option that adds state, such as "
                    "momentum or amsgrad, cannot be switched on after the first step; load a "
                    "state dict or build a new optimizer)"
                )
            for key, value in state.items():
                if not isinstance(value, mx.array):
                    raise TypeError(
                        f"{where}: its state {key!r} is a {type(value).__name__}; expected an "
                        "mx.array"
                    )
            shapes = {k: tuple(v.shape) for k, v in state.items()}
            expected = template
        else:
            raise RuntimeError(f"{where}: no optimizer state; was it added to the group?")
        for key, shape in shapes.items():
            if tuple(shape) != tuple(expected[key]):
                raise ValueError(
                    f"{where}: parameter has shape {p.shape}, its state {key!r} has "
                    f"{tuple(shape)} (expected {tuple(expected[key])}); was its .data replaced?"
                )
        raise AssertionError(f"{where}: refused for no stated reason")  # pragma: no cover

    # ------------------------------------------------------------------ group updates
    def _dense(self, plan: _Plan) -> Callable[[], list[mx.array]]:
        """Compute one group's dense update (one compiled call); return the commit that
        writes it back. Small parameters go through flat buckets (see ``buckets.py``),
        the others one by one; both kinds are inputs of the same compiled call."""
        out: list[mx.array] = []
        small = [p for p in plan.dense if p.size <= SMALL] if self.elementwise else []
        buckets = self._buckets.form(plan.index, small, self._state, out)
        singles = [p for p in plan.dense if p not in self._buckets]
        steps = [step_value(self._state[p]["step"]) + 1 for p in singles]
        jobs = [
            (p.data, p.grad.data, _without_step(self._state[p]), plan.hypers[t])
            for p, t in zip(singles, steps, strict=True)
        ]
        # a bucket's gradients are concatenated outside the compiled call (with one input
        # per gradient, the call itself cost more than the copy: 2000 tensors of 1024,
        # 21 ms inside, 6.4 ms outside), on the stream that will run its update
        stream_of = job_streams([p.size for p in singles] + [b.flat.size for b in buckets])
        bucket_streams = stream_of[len(singles) :]
        for b, stream in zip(buckets, bucket_streams, strict=True):
            with mx.stream(stream):
                grad = b.gather([p.grad.data for p in b.params])
            jobs.append((b.flat, grad, _without_step(b.state), plan.hypers[b.step + 1]))
        results = self._compiled.call(dense_group_step, {"rule": self.rule, **plan.static}, jobs)
        # every reference to the old arrays goes before the eval (the commit replaces the
        # rest), so that MLX may write the new ones into their buffers: a fresh 64 MiB
        # output costs ~33 ms of page faults on Linux, where MLX keeps 32 MiB of freed
        # buffers
        del jobs

        def commit() -> list[mx.array]:
            new = out + self._write_back(singles, results[: len(singles)], steps)
            for b, (flat, state), stream in zip(
                buckets, results[len(singles) :], bucket_streams, strict=True
            ):
                with mx.stream(stream):
                    new += b.hand_out(flat, state, b.step + 1)
                new += [flat, *state.values()]
            return new

        return commit

    def _sparse(self, plan: _Plan) -> Callable[[], list[mx.array]]:
        """Compute one group's row-sparse update (one compiled call); return its commit."""
        active = plan.sparse
        steps = [step_value(self._state[p]["step"]) + 1 for p in active]
        indices, values, rows = sparse_inputs(active)
        results = self._compiled.call(
            sparse_group_step,
            {"rule_rows": self.rule_rows, **plan.static},
            [p.data for p in active],
            indices,
            values,
            rows,
            [_without_step(self._state[p]) for p in active],
            [plan.hypers[t] for t in steps],
        )
        # drop every reference to the old tables: a scatter reuses its target's buffer
        # only when nothing else holds it, otherwise MLX copies the whole table
        del indices, values, rows
        return lambda: self._write_back(active, results, steps)

    def _write_back(
        self, params: list[Parameter], results: list[tuple[mx.array, State]], steps: list[int]
    ) -> list[mx.array]:
        """Point each parameter and its state at the step's (lazy) results; return them."""
        out: list[mx.array] = []
        fresh = self._fresh
        for p, (data, state), t in zip(params, results, steps, strict=True):
            p.data = data
            self._state[p] = {"step": step_array(t), **state}
            fresh[id(p)] = data.shape
            out.append(data)
            out.extend(state.values())
        return out

    # ------------------------------------------------------------------ helpers
    def _all_params(self) -> list[Parameter]:
        return [p for g in self.param_groups for p in g["params"]]

    def __deepcopy__(self, memo: dict[int, Any]) -> Optimizer:
        """An independent optimizer over deep copies of the parameters (or over the
        copies already in ``memo``, as in ``copy.deepcopy({"model": m, "opt": o})``).
        The compiled functions are not copied; the copy compiles its own."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        state = {**self._state, **self._buckets.snapshot()}
        skip = {"_state", "_buckets", "_compiled", "_templates", "_validated", "_hyper_memo",
                "_fresh"}  # fmt: skip
        for key, value in self.__dict__.items():
            if key not in skip:
                setattr(new, key, copy.deepcopy(value, memo))
        new._state = {
            copy.deepcopy(p, memo): {
                k: step_array(step_value(v)) if k == "step" else copy.deepcopy(v, memo)
                for k, v in s.items()
            }
            for p, s in state.items()
        }
        new._buckets = Buckets()
        new._compiled = CompiledSteps(type(self).__name__)
        new._templates, new._validated, new._hyper_memo, new._fresh = {}, {}, {}, {}
        return new

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {g[k]}" for k in sorted(g) if k != "params")
        lines.append(")")
        return "\n".join(lines)


class _Plan:
    """What one group's step will do, decided (and validated) before anything changes."""

    __slots__ = ("index", "group", "static", "dense", "sparse", "hypers", "reinit")

    def __init__(self, index: int, group: dict[str, Any], static: dict[str, Any],
                 dense: list[Parameter], sparse: list[Parameter],
                 hypers: dict[int, Hyper], reinit: dict[Parameter, State]) -> None:  # fmt: skip
        self.index, self.group, self.static = index, group, static
        self.dense, self.sparse, self.hypers = dense, sparse, hypers
        self.reinit = reinit


def _equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    try:
        return bool(a == b)
    except Exception:  # a value whose == gives no bool (an array): not the same
        return False


def _without_step(state: State) -> State:
    """The rule's part of a state, keys sorted: ``mx.compile`` keys its cache on the
    order of dict keys too, and a rule may return its state in another order than
    ``init_state`` made it (measured: RMSprop with momentum and centered traced twice)."""
    return {k: state[k] for k in sorted(state) if k != "step"}


def _param_list(name: str, params: Any, where: str) -> list[Any]:
    if isinstance(params, Module):
        raise TypeError(
            f"{name}: {where}: expected parameters; got a {type(params).__name__} module. "
            "Did you mean model.parameters()?"
        )
    if isinstance(params, (Tensor, mx.array)):
        return [params]
    return list(params)


def _groups(name: str, params: Any) -> list[Any]:
    """The parameter groups of an optimizer's ``params`` argument."""
    if isinstance(params, Module):
        raise TypeError(
            f"{name}: params must be parameters; got a {type(params).__name__} module. "
            "Did you mean model.parameters()?"
        )
    if trees.is_tree(params):  # one MLX tree: one group
        return [{"params": params}]
    if isinstance(params, (Tensor, mx.array)):
        raise TypeError(
            f"{name}: params must be an iterable of Parameters or of dicts; got a single "
            f"{type(params).__name__}. Wrap it in a list."
        )
    if isinstance(params, (str, bytes)) or not isinstance(params, Iterable):
        raise TypeError(
            f"{name}: params must be an iterable of Parameters or of dicts; got "
            f"{type(params).__name__}"
        )
    groups = list(params)
    if not groups:
        raise ValueError(f"{name}: params is empty; expected parameters")
    return groups if isinstance(groups[0], dict) else [{"params": groups}]
