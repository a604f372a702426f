"""Optimizer: the machinery every update rule shares.

A rule (see :class:`lucid.optim.Adagrad`) supplies small pieces:

- ``init_state(param, group) -> dict``: the per-parameter state besides ``"step"``;
- ``step_hyperparameters(group, t) -> dict``: the numbers the rule needs at step ``t``
  (e.g. the decayed learning rate), computed on the host in float64;
- ``update(param, grad, state, hyper, **static) -> (param, state)``: a pure function on
  ``mx.array`` s, one step of one parameter;
- ``static_config(group)``: flags that change the traced graph; ``validate(name, value)``.

This class owns the rest: parameter groups, step counters, a compiled step per group,
one ``mx.eval`` per :meth:`step`, and the PyTorch-shaped ``state_dict``.

The compiled step
-----------------
For each group, :meth:`step` makes *one* call of an ``mx.compile`` d function over the
lists of parameters, gradients, states and per-step hyperparameters. The
hyperparameters enter as float32 scalar arrays, so new values (a scheduled ``lr``, the
step count) never retrace; ``mx.compile`` keys its cache on the structure of the inputs
(count, shapes, dtypes), and each distinct ``static_config`` has its own compiled
function. Inside, three measured shortcuts (see :func:`own_kernel`, ``buckets.py`` and
:data:`STREAMS`) keep buffers in place, batch small tensors and use two streams. After
all groups are updated, the new parameters and states are written back and evaluated
together, once.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import mlx.core as mx

from .. import bounds
from ..nn.parameter import Parameter
from ..sparse import SparseGrad, coalesce_fixed, pad_entries
from ..tensor import Tensor
from .buckets import SMALL, FlatBucket, flatten

__all__ = ["Optimizer"]

State = dict[str, mx.array]

_FLOATING = (mx.float32, mx.float16, mx.bfloat16, mx.float64)
_warned_no_compile = False  # the no-compiler warning is given once per process

# ---------------------------------------------------------------------------- step counters

# Step counters are interned scalar arrays, one per value, shared by every parameter at
# that step. Advancing 2000 counters then costs a dict lookup each instead of a kernel
# each (measured on C, 2000 parameters: 15.6 ms for compiled `step + 1` per parameter,
# 0.2 ms for the lookups). mx.arrays are values: nothing here modifies one in place.
_STEP_ARRAYS: dict[int, mx.array] = {}
_STEP_OF_ID: dict[int, int] = {}
_MAX_STEP_ARRAYS = 1024


def step_array(t: int) -> mx.array:
    """The interned float32 scalar for step count ``t`` (float32, as torch stores it)."""
    arr = _STEP_ARRAYS.get(t)
    if arr is None:
        if len(_STEP_ARRAYS) >= _MAX_STEP_ARRAYS:  # bounded: a long run must not grow it
            oldest = _STEP_ARRAYS.pop(next(iter(_STEP_ARRAYS)))
            _STEP_OF_ID.pop(id(oldest), None)  # an evicted array still reads via .item()
        arr = _STEP_ARRAYS[t] = mx.array(float(t), dtype=mx.float32)
        _STEP_OF_ID[id(arr)] = t
    return arr


def step_value(arr: mx.array) -> int:
    """The Python int behind a step counter (interned, or any scalar array)."""
    t = _STEP_OF_ID.get(id(arr))
    if t is not None and _STEP_ARRAYS.get(t) is arr:
        return t
    return int(arr.item())


# ---------------------------------------------------------------------------- kernels, streams


def own_kernel(x: mx.array) -> mx.array:
    """``x`` unchanged, but computed by a kernel of its own inside ``mx.compile``.

    A compiled rule that returns both a new parameter and a new state fuses them into
    one two-output kernel, and MLX gives such a kernel fresh output buffers instead of
    reusing its inputs' (measured, 16M float32: +128 MB per step, and ~33 ms of page
    faults per fresh 64 MB array on Linux). A no-copy reshape between the two ends the
    fusion: each output then comes from a single-output kernel that writes over its
    input's buffer (0 MB extra), at the cost of reading the new state once more.
    """
    return x.reshape(1, -1).reshape(x.shape)


#: streams a step spreads its updates over: the device's default stream and STREAMS - 1
#: more. MLX's CPU backend runs each stream on one thread, so two streams use both cores
#: of a small machine (measured on set B, 100 tensors: 22.7 ms on one stream, 12.9 ms on
#: two); on a GPU they overlap kernels.
STREAMS = 2
_streams: dict[str, list[mx.Stream]] = {}


def _spread(sizes: list[int]) -> list[tuple[mx.Stream, list[int]]]:
    """Assign jobs to streams, largest first, each to the least loaded stream."""
    device = mx.default_device()
    streams = _streams.get(str(device))
    if streams is None:
        extra = [mx.new_stream(device) for _ in range(STREAMS - 1)]
        streams = _streams[str(device)] = [mx.default_stream(device), *extra]
    load = [0] * len(streams)
    assigned: list[list[int]] = [[] for _ in streams]
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        k = load.index(min(load))
        load[k] += sizes[i]
        assigned[k].append(i)
    return [(s, sorted(a)) for s, a in zip(streams, assigned, strict=True) if a]


class Optimizer:
    """Base class: holds ``param_groups`` and ``state`` and runs the compiled step.

    Args:
        params: an iterable of :class:`~lucid.nn.Parameter`, or of dicts (parameter
            groups) each with ``"params"`` and optional hyperparameters that override
            ``defaults`` for that group.
        defaults: hyperparameter names and their default values.
    """

    #: whether ``update`` is elementwise, so that it may run on many small parameters
    #: concatenated into one flat array (buckets.py)
    elementwise: bool = False
    #: whether the rule has ``update_rows``, the step for a row-sparse gradient
    supports_sparse: bool = False

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        for name, value in self.defaults.items():
            self.validate(name, value)
        self.param_groups: list[dict[str, Any]] = []
        self._state: dict[Parameter, State] = {}
        # small parameters of each group live in flat buckets between steps (buckets.py);
        # their state is then in the bucket, not in _state
        self._buckets: dict[int, tuple[list[FlatBucket], frozenset[int]]] = {}
        self._bucket_of: dict[int, tuple[FlatBucket, int]] = {}
        self._compiled: dict[tuple, Callable] = {}
        self._traces_of: dict[tuple, int] = {}
        self._keys: set[str] | None = None  # see _state_keys
        self.trace_count = 0  # how many times a step function has been traced

        if isinstance(params, (Tensor, mx.array)):
            raise TypeError(
                f"{type(self).__name__}: params must be an iterable of Parameters or of "
                f"dicts; got a single {type(params).__name__}. Wrap it in a list."
            )
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: params is empty; expected parameters")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # ------------------------------------------------------------------ rule interface
    def init_state(self, param: mx.array, group: dict[str, Any]) -> State:
        """The state of a new parameter, besides its step counter."""
        return {}

    @staticmethod
    def update(param: mx.array, grad: mx.array, state: State, hyper: dict[str, mx.array],
               **static: Any) -> tuple[mx.array, State]:  # fmt: skip
        """One step of one parameter; ``hyper`` is :meth:`step_hyperparameters` as arrays."""
        raise NotImplementedError

    def step_hyperparameters(self, group: dict[str, Any], t: int) -> dict[str, float]:
        """The numbers the rule needs at step ``t`` (from 1), computed on the host in
        float64; they enter the compiled step as float32 scalar arrays, so new values
        never retrace."""
        raise NotImplementedError

    def static_config(self, group: dict[str, Any]) -> dict[str, Any]:
        """Flags that change the traced graph; each distinct value gets its own trace."""
        return {}

    def validate(self, name: str, value: Any) -> None:
        """Raise ``ValueError`` naming ``name`` and ``value`` when ``value`` is not allowed."""

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> dict[Parameter, State]:
        """Per-parameter state, ``{"step": ..., **rule state}``, keyed by Parameter.

        Reading it unpacks the flat buckets of small parameters into per-parameter arrays
        (no-copy slices, evaluated here; the next step packs them again, so reading it
        every step costs a repack). A step replaces each parameter's state dict, so read
        ``optimizer.state`` again after a step rather than holding on to it.
        """
        mx.eval(self._unpack_buckets())
        for s in self._state.values():  # the interned counters stay private: `+=` on an
            if _STEP_OF_ID.get(id(s.get("step"))) is not None:  # mx.array writes in place
                s["step"] = mx.array(float(step_value(s["step"])), dtype=mx.float32)
        return self._state

    @state.setter
    def state(self, value: dict[Parameter, State]) -> None:
        self._unpack_buckets()
        self._state = value

    def _unpack_buckets(self, index: int | None = None) -> list[mx.array]:
        """Move the state of the buckets of group ``index`` (default: all groups) back
        into ``_state``; return the new, not yet evaluated, arrays."""
        unpacked = []
        for gi in list(self._buckets) if index is None else [index]:
            for b in self._buckets.pop(gi, ([], None))[0]:
                for p, s in zip(b.params, b.unpack_state(), strict=True):
                    self._state[p] = {"step": step_array(b.step), **s}
                    del self._bucket_of[id(p)]
                    unpacked.extend(s.values())
        return unpacked

    def _state_of(self, p: Parameter) -> State:
        if id(p) in self._bucket_of:
            self._unpack_buckets()
        return self._state[p]

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
        params = [params] if isinstance(params, Tensor) else list(params)
        index = len(self.param_groups)
        if not params:
            raise ValueError(f"param group {index}: 'params' is empty; expected parameters")
        seen_here: set[int] = set()
        taken = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise TypeError(
                    f"param group {index}, params[{i}]: expected an nn.Parameter; "
                    f"got {type(p).__name__}"
                )
            if not mx.issubdtype(p.dtype, mx.floating):
                raise TypeError(
                    f"param group {index}, params[{i}]: an optimizer needs floating "
                    f"parameters; got dtype {p.dtype}"
                )
            if id(p) in seen_here:
                raise ValueError(f"param group {index}, params[{i}]: appears twice in the group")
            if id(p) in taken:
                raise ValueError(
                    f"param group {index}, params[{i}]: already in another parameter group"
                )
            seen_here.add(id(p))
        unknown = sorted(set(param_group) - set(self.defaults) - {"params"})
        if unknown:
            raise ValueError(
                f"param group {index}: unknown hyperparameter(s) {unknown}; "
                f"expected some of {sorted(self.defaults)}"
            )
        group = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        self._check_hyperparameters(f"param group {index}", group)
        group["params"] = params
        new_state = {p: {"step": step_array(0), **self.init_state(p.data, group)} for p in params}
        self.param_groups.append(group)
        self.state.update(new_state)

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

    # ------------------------------------------------------------------ the step
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; return ``closure()`` if given.

        Everything is checked before anything changes; then each group makes one call of
        its compiled update, and one ``mx.eval`` runs over all new arrays together.
        """
        loss = closure() if closure is not None else None
        # lazy index checks (lucid.bounds) raise here, before anything changes; they
        # evaluate only the index flags, and only when some are pending
        bounds.check_pending(at="optimizer.step()")
        plans = [self._plan(i, group) for i, group in enumerate(self.param_groups)]

        new_arrays: list[mx.array] = []
        for index, (group, active) in enumerate(zip(self.param_groups, plans, strict=True)):
            dense = [p for p in active if not isinstance(p.grad, SparseGrad)]
            sparse = [p for p in active if isinstance(p.grad, SparseGrad)]
            if dense:
                new_arrays.extend(self._apply(index, group, dense))
            if sparse:  # row-sparse gradients: their own compiled call, same single eval
                new_arrays.extend(self._apply_sparse(group, sparse))
        if new_arrays:
            mx.eval(new_arrays)
        return loss

    def _plan(self, index: int, group: dict[str, Any]) -> list[Parameter]:
        """Validate one group for a step and list its parameters that have a gradient."""
        self._check_hyperparameters(f"param group {index}", group)
        active = []
        for i, p in enumerate(group["params"]):
            g = p.grad
            if g is None:
                continue
            if not self._ready(p, g):  # the cheap check; the explanation only on failure
                self._refuse(f"param group {index}, params[{i}]", p, g)
            active.append(p)
        return active

    def _check_hyperparameters(self, where: str, group: dict[str, Any]) -> None:
        for name in self.defaults:
            try:
                self.validate(name, group[name])
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None

    def _ready(self, p: Parameter, g: Any) -> bool:
        """Whether ``p`` can step with gradient ``g`` (see :meth:`_refuse` for the rules)."""
        data = p.data
        if data.dtype not in _FLOATING:
            return False
        if isinstance(g, SparseGrad):
            if not self.supports_sparse or g.shape != data.shape or g.dtype != data.dtype:
                return False
        elif not isinstance(g, Tensor) or g.data.shape != data.shape or g.data.dtype != data.dtype:
            return False
        held = self._bucket_of.get(id(p))
        if held is not None:
            return held[0].shapes[held[1]] == data.shape
        state = self._state.get(p)
        return (
            state is not None
            and state.keys() == self._state_keys(p)
            and all(isinstance(v, mx.array) for v in state.values())
            and all(v.shape == data.shape for k, v in state.items() if k != "step")
        )

    def _state_keys(self, p: Parameter) -> set[str]:
        """The keys a parameter's state must have: ``"step"`` and the rule's own."""
        if self._keys is None:
            group = next(g for g in self.param_groups if any(q is p for q in g["params"]))
            self._keys = {"step", *self.init_state(mx.zeros((1,)), group)}
        return self._keys

    def _refuse(self, where: str, p: Parameter, g: Any) -> None:
        """Raise the error that says why :meth:`_ready` refused ``p``."""
        if not mx.issubdtype(p.dtype, mx.floating):  # its .data was replaced since
            raise TypeError(f"{where}: an optimizer needs floating parameters; got {p.dtype}")
        if isinstance(g, SparseGrad):
            if not self.supports_sparse:
                raise TypeError(
                    f"{where}: {type(self).__name__} does not support sparse gradients "
                    f"(got a SparseGrad of shape {g.shape}); use lucid.optim.Adagrad, or "
                    "build the embedding with sparse=False"
                )
        elif not isinstance(g, Tensor):
            raise TypeError(f"{where}: grad must be a Tensor; got {type(g).__name__}")
        if g.shape != p.shape:
            raise ValueError(f"{where}: grad has shape {g.shape}, parameter has {p.shape}")
        if g.dtype != p.dtype:
            raise ValueError(f"{where}: grad has dtype {g.dtype}, parameter has {p.dtype}")
        # a rule's state arrays (besides "step") are shaped like the parameter; a
        # .data replaced by another shape would fail, or broadcast, mid-step
        if id(p) in self._bucket_of:
            bucket, j = self._bucket_of[id(p)]
            shapes = {"sum": bucket.shapes[j]}
        elif p in self._state:
            state = self._state[p]
            if state.keys() != self._state_keys(p):
                raise ValueError(
                    f"{where}: its state has keys {sorted(state)}; expected "
                    f"{sorted(self._state_keys(p))}"
                )
            for key, value in state.items():
                if not isinstance(value, mx.array):
                    raise TypeError(
                        f"{where}: its state {key!r} is a {type(value).__name__}; expected an "
                        "mx.array"
                    )
            shapes = {k: v.shape for k, v in state.items() if k != "step"}
        else:
            raise RuntimeError(f"{where}: no optimizer state; was it added to the group?")
        for key, shape in shapes.items():
            if tuple(shape) != p.shape:
                raise ValueError(
                    f"{where}: parameter has shape {p.shape}, its state {key!r} has "
                    f"{tuple(shape)}; was its .data replaced?"
                )
        raise AssertionError(f"{where}: refused for no stated reason")  # pragma: no cover

    def _apply(self, index: int, group: dict[str, Any], active: list[Parameter]) -> list[mx.array]:
        """Run the compiled update of one group and write the results back (lazily).

        Small parameters go through flat buckets (see ``buckets.py``), the others one by
        one; both kinds are inputs of the same single compiled call.
        """
        hyper = self._hyper_for(group)
        out: list[mx.array] = []
        buckets, singles = self._bucket(index, active, out)
        states = [self._state[p] for p in singles]
        steps = [step_value(s["step"]) + 1 for s in states]
        tensors = [
            (p.data, p.grad.data, {k: v for k, v in s.items() if k != "step"}, hyper(t))
            for p, s, t in zip(singles, states, steps, strict=True)
        ]
        # a bucket's gradients are concatenated outside the compiled call: with one input
        # per gradient, the call itself cost more than the copy (2000 tensors of 1024:
        # 21 ms inside, 6.4 ms outside)
        flats = [
            (b.take_flat(), flatten([p.grad.data for p in b.params]), b.state, hyper(b.step + 1))
            for b in buckets
        ]
        static = self.static_config(group)
        fn = self._compiled_for(self._update_all, static)
        traces = self.trace_count
        new_tensors, new_flats = fn(tensors, flats)
        if self.trace_count != traces:
            self._note_trace(static, tensors, flats)
        # drop every reference to the old arrays before the eval, so that MLX may write
        # the new ones into their buffers (a fresh 64 MiB output costs ~33 ms of page
        # faults on Linux, where MLX keeps only 32 MiB of freed buffers)
        del tensors, flats, states
        out.extend(self._write_back(singles, new_tensors, steps))
        for b, (flat, state) in zip(buckets, new_flats, strict=True):
            out.extend(b.hand_out(flat, state, b.step + 1))
            out.append(flat)
            out.extend(state.values())
        return out

    def _bucket(
        self, index: int, active: list[Parameter], out: list[mx.array]
    ) -> tuple[list[FlatBucket], list[Parameter]]:
        """Split a group's active parameters into flat buckets and single tensors.

        The buckets of the last step are kept while the same small parameters step
        together and nobody assigned their ``.data`` (the steady state); otherwise they
        are unpacked and formed anew from the parameters' current arrays, one per
        (dtype, step count) with at least two members, since a bucket shares one step
        count. Unpacked state that this step does not consume is added to ``out``.
        """
        small = [p for p in active if p.size <= SMALL] if self.elementwise else []
        members = frozenset(id(p) for p in small)
        buckets, formed_for = self._buckets.get(index, ([], frozenset()))
        if members != formed_for or not all(b.intact() for b in buckets):
            out.extend(self._unpack_buckets(index))
            classes: dict[tuple, list[Parameter]] = {}
            for p in small:
                classes.setdefault((p.dtype, step_value(self._state[p]["step"])), []).append(p)
            buckets = []
            for (_, t), ps in classes.items():
                if len(ps) < 2:
                    continue
                states = [self._state.pop(p) for p in ps]
                inner = [{k: v for k, v in s.items() if k != "step"} for s in states]
                bucket = FlatBucket(ps, inner, t)
                buckets.append(bucket)
                self._bucket_of.update({id(p): (bucket, j) for j, p in enumerate(ps)})
            self._buckets[index] = (buckets, members)
        singles = [p for p in active if id(p) not in self._bucket_of]
        return buckets, singles

    def _hyper_for(self, group: dict[str, Any]) -> Callable[[int], dict[str, mx.array]]:
        """``t -> step_hyperparameters(group, t)`` as arrays, made once per distinct ``t``."""
        made: dict[int, dict[str, mx.array]] = {}

        def hyper(t: int) -> dict[str, mx.array]:
            h = made.get(t)
            if h is None:
                values = self.step_hyperparameters(group, t)
                h = made[t] = {k: mx.array(v, dtype=mx.float32) for k, v in values.items()}
            return h

        return hyper

    def _note_trace(self, static: dict[str, Any], tensors: list, flats: list) -> None:
        """Warn once per process when ``mx.compile`` retraces an unchanged structure.

        Without a C++ compiler (``g++``) on PATH, MLX's CPU backend silently stops
        compiling: results stay right, but every call retraces and nothing is fused.
        MLX may trace a new function twice before caching it, so a third trace of the
        same structure is the signal.
        """
        key = (
            tuple(sorted(static.items())),
            tuple((p.shape, p.dtype) for p, *_ in tensors),
            tuple((f.shape, f.dtype) for f, *_ in flats),
        )
        self._traces_of[key] = n = self._traces_of.get(key, 0) + 1
        global _warned_no_compile
        if n >= 3 and not _warned_no_compile:
            _warned_no_compile = True
            warnings.warn(
                f"mx.compile is not compiling: {type(self).__name__}'s step was traced {n} "
                "times for the same parameters. On MLX's CPU backend this happens when no "
                "C++ compiler (g++) is on PATH. Steps stay correct but run unfused and "
                "retrace every call; install g++ to fix it.",
                RuntimeWarning,
                stacklevel=4,
            )

    def _compiled_for(self, step: Callable, static: dict[str, Any]) -> Callable:
        """``step`` (a pure group step) with ``static`` bound, compiled once per value."""
        key = (step.__name__, *sorted(static.items()))
        fn = self._compiled.get(key)
        if fn is None:
            fn = self._compiled[key] = mx.compile(partial(step, **static))
        return fn

    def _write_back(
        self, params: list[Parameter], results: list[tuple[mx.array, State]], steps: list[int]
    ) -> list[mx.array]:
        """Point each parameter and its state at the step's (lazy) results; return them."""
        out: list[mx.array] = []
        for p, (data, state), t in zip(params, results, steps, strict=True):
            p.data = data
            self._state[p] = {"step": step_array(t), **state}
            out.append(data)
            out.extend(state.values())
        return out

    def _update_all(
        self,
        tensors: list[tuple[mx.array, mx.array, State, dict[str, mx.array]]],
        flats: list[tuple[mx.array, mx.array, State, dict[str, mx.array]]],
        **static: Any,
    ) -> tuple[list[tuple[mx.array, State]], list[tuple[mx.array, State]]]:
        """The pure step of a group; runs in Python only while ``mx.compile`` traces it.

        ``tensors`` holds ``(param, grad, state, hyper)`` per parameter, ``flats`` the
        same per bucket, flattened; the rule runs once on each.
        """
        self.trace_count += 1
        jobs = [*tensors, *flats]
        results: list[Any] = [None] * len(jobs)
        for stream, indices in _spread([job[0].size for job in jobs]):
            with mx.stream(stream):
                for i in indices:
                    p, g, s, h = jobs[i]
                    results[i] = self.update(p, g, s, h, **static)
        return results[: len(tensors)], results[len(tensors) :]

    # ------------------------------------------------------------------ row-sparse step
    @staticmethod
    def update_rows(param: mx.array, index: mx.array, grad: mx.array, valid: mx.array,
                    param_rows: mx.array, state: State, hyper: dict[str, mx.array],
                    **static: Any) -> tuple[mx.array, State]:  # fmt: skip
        """One step of one parameter from a coalesced row-sparse gradient: ``grad[i]`` is
        the gradient of row ``index[i]`` where ``valid[i]`` (other rows are padding and
        must change nothing); ``param_rows`` is ``param[index]``. Only rules that set
        ``supports_sparse`` define it."""
        raise NotImplementedError

    def _apply_sparse(self, group: dict[str, Any], active: list[Parameter]) -> list[mx.array]:
        """The step of a group's parameters whose gradient is a :class:`SparseGrad`.

        Like :meth:`_apply`: one compiled call for the group, hyperparameters as arrays,
        results written back lazily for the caller's single ``mx.eval``. Inside, each
        gradient is coalesced at fixed shape (:func:`lucid.sparse.coalesce_fixed`) and
        handed to the rule's ``update_rows``.
        """
        hyper = self._hyper_for(group)
        states = [self._state_of(p) for p in active]
        steps = [step_value(s["step"]) + 1 for s in states]
        inner = [{k: v for k, v in s.items() if k != "step"} for s in states]
        grads: list[SparseGrad] = [p.grad for p in active]
        fn = self._compiled_for(self._update_rows_all, self.static_config(group))
        entries = [
            pad_entries(g.indices, g.values, g.rows_of(p))
            for p, g in zip(active, grads, strict=True)
        ]
        new_params, new_states = fn(
            [p.data for p in active],
            [e[0] for e in entries],
            [e[1] for e in entries],
            [e[2] for e in entries],
            inner,
            [hyper(t) for t in steps],
        )
        # drop every reference to the old tables: a scatter reuses its target's buffer
        # only when nothing else holds it, otherwise MLX copies the whole table
        del inner, states, entries
        return self._write_back(active, list(zip(new_params, new_states, strict=True)), steps)

    def _update_rows_all(self, params, indices, values, rows, states, hypers, **static):
        """The pure row-sparse step of a group; runs in Python only while tracing."""
        self.trace_count += 1
        new_params, new_states = [], []
        for p, i, v, r, s, h in zip(params, indices, values, rows, states, hypers, strict=True):
            index, grad, valid, param_rows = coalesce_fixed(i, v, r)
            p, s = self.update_rows(p, index, grad, valid, param_rows, s, h, **static)
            new_params.append(p)
            new_states.append(s)
        return new_params, new_states

    # ------------------------------------------------------------------ state_dict
    def state_dict(self) -> dict[str, Any]:
        """PyTorch's layout: ``{"state": {i: {...}}, "param_groups": [{..., "params": [i]}]}``.

        Parameters are numbered in order across groups. A step replaces the state arrays
        with new ones rather than writing into them, and the arrays returned here are
        objects of their own, so neither later steps nor edits of the returned dict reach
        the other side.
        """
        ids = {id(p): i for i, p in enumerate(self._all_params())}
        # new array objects (no data is copied): `+=` on an mx.array writes into that
        # object, and must not reach this optimizer or the shared step counters
        state = {
            ids[id(p)]: {k: mx.array(v) for k, v in s.items()}
            for p, s in self.state.items()
            if id(p) in ids
        }
        groups = [
            {
                **{k: v for k, v in g.items() if k != "params"},
                "params": [ids[id(p)] for p in g["params"]],
            }
            for g in self.param_groups
        ]
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict`. Everything is validated first; on any error a
        ``ValueError`` names the group, the index and the key, and nothing changes.
        Floating state is cast to its parameter's dtype."""
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError(
                "load_state_dict: expected a dict with exactly the keys 'state' and "
                f"'param_groups'; got {_describe_keys(state_dict)}"
            )
        groups, state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(groups, list) or len(groups) != len(self.param_groups):
            n = len(groups) if isinstance(groups, list) else type(groups).__name__
            raise ValueError(
                f"load_state_dict: 'param_groups' has {n} groups; this optimizer has "
                f"{len(self.param_groups)}"
            )
        if not isinstance(state, dict):
            raise ValueError(f"load_state_dict: 'state' must be a dict; got {type(state).__name__}")

        params = self._all_params()
        new_hyper: list[dict[str, Any]] = []
        for gi, (saved, mine) in enumerate(zip(groups, self.param_groups, strict=True)):
            if not isinstance(saved, dict):
                raise ValueError(f"load_state_dict: param group {gi} must be a dict")
            keys = set(saved) - {"params"}
            if "params" not in saved or keys != set(self.defaults):
                missing = sorted(set(self.defaults) - keys) + (
                    [] if "params" in saved else ["params"]
                )
                raise ValueError(
                    f"load_state_dict: param group {gi}: unknown keys "
                    f"{sorted(keys - set(self.defaults))}, missing keys {missing}"
                )
            if not isinstance(saved["params"], list) or len(saved["params"]) != len(mine["params"]):
                raise ValueError(
                    f"load_state_dict: param group {gi}: key 'params' lists "
                    f"{_length(saved['params'])} parameters; this optimizer's group has "
                    f"{len(mine['params'])}"
                )
            for name in self.defaults:
                try:
                    self.validate(name, saved[name])
                except (TypeError, ValueError) as e:
                    raise ValueError(f"load_state_dict: param group {gi}, key {name!r}: {e}") from e
            new_hyper.append({k: saved[k] for k in self.defaults})

        # the saved ids, in order, name this optimizer's parameters in order
        saved_ids = [i for g in groups for i in g["params"]]
        if sorted(map(_as_int, saved_ids)) != list(range(len(params))):
            raise ValueError(
                f"load_state_dict: 'params' ids must be 0..{len(params) - 1}, each once; "
                f"got {saved_ids}"
            )
        where = {
            _as_int(i): (gi, j) for gi, g in enumerate(groups) for j, i in enumerate(g["params"])
        }
        by_id = {_as_int(i): p for i, p in zip(saved_ids, params, strict=True)}
        new_state: dict[Parameter, State] = {}
        for key, entry in state.items():
            i = _as_int(key)
            if i not in by_id:
                raise ValueError(f"load_state_dict: state key {key!r} names no parameter")
            gi, j = where[i]
            p = by_id[i]
            new_state[p] = self._load_entry(
                entry, p, self.param_groups[gi], f"param group {gi}, params[{j}]"
            )
        for gi, group in enumerate(self.param_groups):  # never stepped in the saved run:
            loaded = {**group, **new_hyper[gi]}  # fresh state, from the loaded hyperparameters
            for p in group["params"]:
                if p not in new_state:
                    new_state[p] = {"step": step_array(0), **self.init_state(p.data, loaded)}

        for mine, hyper in zip(self.param_groups, new_hyper, strict=True):
            mine.update(hyper)
        self.state = new_state

    def _load_entry(self, entry: Any, p: Parameter, group: dict[str, Any], where: str) -> State:
        template = {"step": step_array(0), **self.init_state(p.data, group)}
        if not isinstance(entry, dict) or set(entry) != set(template):
            raise ValueError(
                f"load_state_dict: {where}: state keys {_describe_keys(entry)}; "
                f"expected {sorted(template)}"
            )
        out: State = {}
        for key, ref in template.items():
            value = entry[key]
            if isinstance(value, (int, float)) and key == "step":
                value = mx.array(float(value))
            if not isinstance(value, mx.array):
                raise ValueError(
                    f"load_state_dict: {where}, key {key!r}: expected an mx.array; "
                    f"got {type(value).__name__}"
                )
            if value.shape != ref.shape:
                raise ValueError(
                    f"load_state_dict: {where}, key {key!r}: shape {tuple(value.shape)}, "
                    f"expected {tuple(ref.shape)}"
                )
            if key == "step":
                t = float(value.item())
                if not (math.isfinite(t) and t >= 0 and t == int(t)):
                    raise ValueError(
                        f"load_state_dict: {where}, key 'step': {t} is not a count >= 0"
                    )
                out[key] = step_array(int(t))
            elif mx.issubdtype(value.dtype, mx.floating) or mx.issubdtype(value.dtype, mx.integer):
                # a new array object either way, so in-place edits of the caller's
                # dict never reach this optimizer
                out[key] = value.astype(ref.dtype) if value.dtype != ref.dtype else mx.array(value)
            else:
                raise ValueError(f"load_state_dict: {where}, key {key!r}: dtype {value.dtype}")
        return out

    # ------------------------------------------------------------------ helpers
    def _all_params(self) -> list[Parameter]:
        return [p for g in self.param_groups for p in g["params"]]

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {g[k]}" for k in sorted(g) if k != "params")
        lines.append(")")
        return "\n".join(lines)


def _as_int(key: Any) -> int:
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise ValueError(f"load_state_dict: parameter id {key!r} is not an int")
    try:
        return int(key)
    except ValueError:
        raise ValueError(f"load_state_dict: parameter id {key!r} is not an int") from None


def _length(x: Any) -> Any:
    return len(x) if isinstance(x, list) else type(x).__name__


def _describe_keys(x: Any) -> str:
    return str(sorted(map(str, x))) if isinstance(x, dict) else f"a {type(x).__name__}"
