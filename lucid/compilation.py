"""lucid.compile: one ``mx.compile`` d call for a whole training step, written as in PyTorch.

``lucid.compile(fn, state=[model, optimizer])`` returns a callable with ``fn``'s signature.
Its first call traces ``fn``: lucid points every listed object at the inputs of one pure
function of arrays and runs ``fn`` in Python, op by op, on MLX's tracers. Later calls with
the same structure replay the compiled graph with no Python op dispatch. Per call:

1. *On the host, before the call*, lucid gathers the state: every listed module's
   parameters and buffers (and the parameters of every listed optimizer), their ``.grad``
   where set, every listed optimizer's per-parameter state (flat buckets unpacked: the
   outer compile fuses the update anyway), and each parameter group's hyperparameters for
   its next step count, computed in float64 by the optimizer's own
   ``step_hyperparameters`` exactly as an eager step computes them. They are inputs, so
   a new ``lr``, a schedule or a scheduler step never retraces. MLX's random state is an
   input and an output too (``mx.compile(..., inputs=[mx.random.state],
   outputs=[mx.random.state])``, MLX's documented pattern), so dropout draws new masks.
2. *The compiled call* returns ``fn``'s result arrays, every parameter, buffer and state
   array read back from the objects, and the lazy index checks (:mod:`lucid.bounds`) that
   ``fn`` made. Inside it, ``optimizer.step()`` runs the same pure rule as an eager step
   on each parameter with a gradient, with the hyperparameters taken from the inputs: no
   ``mx.eval``, no host read.
3. *After the call*, the results are written into the objects and the step counters
   advance on the host. The index checks join lucid's pending checks, as an eager
   step's do: the next read of a value (``loss.item()``), or the next call, evaluates
   them, and a bad index first undoes the call (every object and the random key as
   before it), then raises ``IndexError``.

What keys the cache (a new value traces once more, then is cached): the structure of the
arguments (shapes, dtypes, non-Tensor values), which parameters have a gradient on entry,
each listed module's training mode, each parameter group's ``static_config`` and the
pattern of step counts within it, and the keys of each parameter's state.

Gradients are state like the rest: ``fn`` sees the ``.grad`` that each listed parameter
has, and the ``.grad`` it leaves is written back. The first trace lends each parameter a
placeholder gradient that raises when read: a step that begins with ``zero_grad()`` never
reads it, so the gradients then stay out of the compiled call's inputs and out of its
cache key (one trace, whether ``.grad`` is set or not). A function that does read the
incoming gradients (accumulation across calls) is traced again with them as inputs,
keyed on which parameters have one.

``fn`` may not read values on the host (``.item()``, ``.numpy()``, ``float()``,
``print``), nor call ``clip_grad_norm_(error_if_nonfinite=True)``: inside a compiled
call no value exists yet, and lucid raises an error that says so. Python values that
``fn`` reads (flags, sizes, an unlisted module's weights) are constants of the trace.
A parameter that ``fn`` changes, or gives a gradient, without being listed raises an
error at the trace. A failing call changes no listed object, nor the random key.

Measured (``benchmarks/compile_step.py``, 2-core Linux, MLX 0.32 CPU, a loaded machine:
rough numbers): on the small-op model of issue 14 a compiled step took 1.5-2.6 ms
against 2.9-3.7 ms eager and 1.1-2.3 ms for MLX's own compiled step (1.1-1.4x of it,
the load moving the ratio); lucid's cost above MLX's is host work, ~0.15 ms a call
for 36 parameters (gathering and writing back the state), since the compiled graphs
measured the same.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Iterable
from typing import Any

import mlx.core as mx

from . import bounds
from .nn.module import Registry
from .optim.compiled import dense_group_step
from .optim.counters import step_array, step_value
from .sparse import SparseGrad
from .tensor import Tensor

__all__ = ["compile", "Compiled", "active"]

_active: _Trace | None = None  # the trace that is running, if any
#: a group's update is spread over the streams (kernels.py) above this many elements, and
#: stays on the compiled call's stream below. Measured (2-core Linux, MLX 0.32 CPU,
#: loaded; medians of 450 steps): the small-op model (9.6k elements, 36 tensors) took
#: 2.68 ms a step on two streams and 2.43 ms on one (the streams' synchronisation costs
#: more than tiny updates gain); a 784-1024-1024-10 MLP (1.9M elements) 262 ms and
#: 271 ms. Where between them the two cross was not measured.
SPREAD_ABOVE = 1 << 20
_DATA = Tensor.__dict__["data"]  # the slot behind Tensor.data (and Parameter's property)


class _GradRead(Exception):
    """A trace read a placeholder gradient: ``fn`` depends on the incoming ``.grad``."""


class _Placeholder(Tensor):
    """The ``.grad`` of every listed parameter while a trace has not seen ``fn`` read
    gradients: reading it (``.data``, and so its shape or any op) stops that trace."""

    __slots__ = ()

    @property  # type: ignore[override]
    def data(self) -> mx.array:
        raise _GradRead


_PLACEHOLDER = _Placeholder.__new__(_Placeholder)


def active() -> _Trace | None:
    """The running trace of a :func:`compile` d function, or ``None`` (eager)."""
    return _active


def compile(fn: Callable, state: Iterable[Any] = ()) -> Compiled:  # noqa: A001
    """Compile ``fn`` into one MLX call; ``state`` lists the modules and optimizers that
    ``fn`` reads and writes (see the module docstring). Without ``state``, ``fn`` is a
    pure function of its Tensor arguments (inference, a loss).

    Example::

        @functools.partial(lucid.compile, state=[model, optimizer])
        def train_step(x, y):
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            return loss
    """
    return Compiled(fn, state)


class Compiled:
    """The callable that :func:`compile` returns; ``trace_count`` counts its traces."""

    def __init__(self, fn: Callable, state: Iterable[Any]) -> None:
        from .nn.module import Module
        from .optim.optimizer import Optimizer

        if not callable(fn):
            raise TypeError(f"lucid.compile: fn must be callable; got {type(fn).__name__}")
        if isinstance(state, (Module, Optimizer)):
            state = [state]
        self.modules: list[Module] = []
        self.optimizers: list[Optimizer] = []
        for i, obj in enumerate(state):
            if isinstance(obj, Module):
                self.modules.append(obj)
            elif isinstance(obj, Optimizer):
                self.optimizers.append(obj)
            else:
                raise TypeError(
                    f"lucid.compile: state[{i}] must be an nn.Module or an optim.Optimizer; "
                    f"got {type(obj).__name__}"
                )
        self.fn = fn
        self.trace_count = 0
        self._reads_grads = False  # learned: a trace read a placeholder gradient
        self._entries: dict[tuple, Callable] = {}
        self._layouts: dict[tuple, _Layout] = {}
        self._call: _Call | None = None
        self._walked: tuple | None = None  # the last walk over the objects (see _Call)
        functools.update_wrapper(self, fn)

    # ------------------------------------------------------------------ the call
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _active is not None:
            raise RuntimeError(
                "lucid.compile: a compiled function was called while another is traced"
            )
        try:
            return self._run(args, kwargs)
        except _GradRead:  # fn reads the incoming gradients: they become inputs
            self._reads_grads = True
            return self._run(args, kwargs)

    def _run(self, args: tuple, kwargs: dict) -> Any:
        if bounds.pending():  # as an eager step does: a bad index raises before any change
            bounds.check_pending(at=f"the start of the compiled call of {_name(self.fn)}")
        call = _Call(self, args, kwargs, with_grads=self._reads_grads)
        fn = self._entries.get(call.key)
        if fn is None:
            layout = self._layouts[call.key] = _Layout()
            fn = mx.compile(
                functools.partial(self._trace, layout),
                inputs=[mx.random.state],
                outputs=[mx.random.state],
            )
            self._entries[call.key] = fn
        layout = self._layouts[call.key]
        self._call = call
        key = mx.random.state[0]  # MLX leaves a tracer there when a trace fails
        try:
            outputs = fn(call.inputs)
        except BaseException:
            _reseed(key)
            if not layout.traced:  # a failed trace caches nothing: the next call traces
                del self._entries[call.key], self._layouts[call.key]
            raise
        finally:
            self._call = None
        del call.inputs  # the old arrays may be donated to the new ones
        return call.finish(layout, outputs, key)

    # ------------------------------------------------------------------ the trace
    def _trace(self, layout: _Layout, inputs: list[mx.array]) -> list[mx.array]:
        """The pure function that ``mx.compile`` traces: runs ``fn`` with every listed
        object pointed at ``inputs``; returns the results and the state read back."""
        global _active
        from .nn.parameter import Parameter

        call = self._call
        assert call is not None
        saved = call.snapshot()
        listed = {id(p) for p in call.params}
        # every other live Parameter, to catch (and undo) what fn does to them: found
        # through the garbage collector, at trace time only (~10 ms per 100k objects)
        others = [
            (p, p._version, p.grad, _DATA.__get__(p)) for p in gc.get_objects()
            if issubclass(type(p), Parameter) and id(p) not in listed
        ]  # fmt: skip
        trace = _Trace(call)
        try:
            args, kwargs = call.point_at(inputs)
            _active = trace
            with bounds.capturing() as checks:
                try:
                    result = self.fn(*args, **kwargs)
                except _GradRead:
                    raise
                except (ValueError, RuntimeError) as e:
                    if "Attempting to eval" in str(e):
                        raise RuntimeError(
                            f"lucid.compile: {_name(self.fn)} read a value on the host while "
                            "being traced (.item(), .numpy(), .tolist(), float(), bool() or "
                            "printing a Tensor). Inside a compiled call no value is computed "
                            "yet; return the Tensor from fn and read it after the call."
                        ) from None
                    raise
            _active = None
            self.trace_count += 1
            for p, version, grad, _ in others:
                if p._version != version or p.grad is not grad:
                    what = "changed its .data" if p._version != version else "gave it a .grad"
                    raise RuntimeError(
                        f"lucid.compile: {_name(self.fn)} {what} for a Parameter of shape "
                        f"{p.shape} that state=[...] does not list. List its module (or its "
                        "optimizer) in state, or wrap that part in lucid.no_grad()."
                    )
            return layout.record(call, trace, result, checks)
        finally:
            _active = None
            call.restore(saved)
            for p, version, grad, data in others:
                _DATA.__set__(p, data)
                p.grad, p._version = grad, version


class _Layout:
    """What the trace of one structure returns, recorded when it is traced."""

    def __init__(self) -> None:
        self.traced = False
        self.result: Any = None  # the tree of fn's result, leaves as positions
        self.n_results = 0
        self.state_keys: list[list[tuple[str, ...]]] = []  # per optimizer, per parameter
        self.stepped: list[list[int]] = []  # per optimizer, positions in its params
        self.grads: list[int] = []  # positions (in call.params) of the grads written back
        self.cleared: list[int] = []  # positions of the grads that fn set to None
        self.checks: list[Any] = []  # the ranges of the lazy index checks, in order

    def record(self, call: _Call, trace: _Trace, result: Any, checks: list[Any]) -> list:
        leaves: list[mx.array] = []
        self.result = _pack(result, leaves)
        self.n_results = len(leaves)
        out = leaves + [p.data for p in call.params] + [b.data for b in call.buffers]
        self.state_keys, self.stepped = [], []
        for opt, params in zip(call.optimizers, call.opt_params, strict=True):
            keys = []
            for p in params:
                state = opt._state[p]
                k = tuple(sorted(key for key in state if key != "step"))
                keys.append(k)
                out += [state[key] for key in k]
            self.state_keys.append(keys)
            stepped = trace.stepped.get(id(opt), [])
            position = {id(p): i for i, p in enumerate(params)}
            self.stepped.append([position[id(p)] for p in stepped])
        # a placeholder still in place was not touched: that .grad stays as it is
        ends = [p.grad for p in call.params]
        self.grads = [
            i for i, g in enumerate(ends) if isinstance(g, Tensor) and g is not _PLACEHOLDER
        ]
        self.cleared = [i for i, g in enumerate(ends) if g is None]
        for i in self.grads:
            if not isinstance(ends[i].data, mx.array):
                raise TypeError(f"lucid.compile: a .grad holds a {type(ends[i]).__name__}")
        out += [ends[i].data for i in self.grads]
        self.checks = [c.range for c in checks]
        for c in checks:
            out += [c.ok, c.values]
        self.traced = True
        return out


class _Trace:
    """The running trace: the per-step hyperparameters that the listed optimizers read,
    and which parameters each one stepped."""

    def __init__(self, call: _Call) -> None:
        self.hypers = {id(opt): h for opt, h in zip(call.optimizers, call.hypers, strict=True)}
        self.stepped: dict[int, list[Any]] = {}

    def optimizer_step(self, opt: Any, closure: Callable[[], Any] | None) -> Any:
        """``opt.step(closure)`` inside the trace: the optimizer's pure rule on every
        parameter with a gradient, hyperparameters from the call's inputs."""
        name = type(opt).__name__
        hypers = self.hypers.get(id(opt))
        if hypers is None:
            raise RuntimeError(
                f"lucid.compile: {name}.step() ran inside the compiled function, but that "
                "optimizer is not in state=[...]; list it: lucid.compile(fn, state=[model, "
                "optimizer])"
            )
        if id(opt) in self.stepped:
            raise RuntimeError(
                f"lucid.compile: {name}.step() ran twice in one compiled call; one step per "
                "call is supported (call the compiled function once per step)"
            )
        loss = closure() if closure is not None else None
        stepped = []
        for gi, group in enumerate(opt.param_groups):
            static = opt.static_config(group)
            signature = (type(opt), tuple(sorted(static.items())))
            params, jobs = [], []
            for i, p in enumerate(group["params"]):
                g = p.grad
                if g is None:
                    continue
                where = f"param group {gi}, params[{i}]"
                if isinstance(g, SparseGrad):
                    raise TypeError(
                        f"{where}: lucid.compile does not support row-sparse gradients "
                        "(nn.Embedding(sparse=True)) yet; run this step eagerly"
                    )
                if not opt._ready(p, g, signature, group):
                    opt._refuse(where, p, g, signature, group)
                state = opt._state[p]
                inner = {k: state[k] for k in sorted(state) if k != "step"}
                params.append(p)
                jobs.append((p.data, g.data, inner, hypers[gi][step_value(state["step"]) + 1]))
            if sum(job[0].size for job in jobs) > SPREAD_ABOVE:  # as the eager step
                results = dense_group_step(jobs, rule=opt.rule, **static)
            else:
                results = [opt.rule(*job, **static) for job in jobs]
            for p, (new, inner) in zip(params, results, strict=True):
                p.data = new
                opt._state[p] = {"step": opt._state[p]["step"], **inner}  # counted after
            stepped += params
        self.stepped[id(opt)] = stepped
        return loss


class _Call:
    """One call's objects, gathered on the host: the inputs of the compiled function in
    order, the key of its structure, and the write-back after it."""

    def __init__(self, owner: Compiled, args: tuple, kwargs: dict, with_grads: bool) -> None:
        # the walk over the modules is kept while no registry of any module changed and
        # the optimizers hold the same parameters (it runs every call: ~0.1 ms of a 3 ms
        # step on the small-op model, with the caches cold after the last evaluation)
        fingerprint = (
            Registry.changes,
            tuple(tuple(map(id, g["params"])) for o in owner.optimizers for g in o.param_groups),
        )
        walked = owner._walked
        if walked is None or walked[0] != fingerprint:
            walked = owner._walked = (fingerprint, *_gather(owner))
        _, modules, params, buffers = walked
        training = [m.training for m in modules]
        for opt in owner.optimizers:
            if opt._buckets:
                opt._buckets.unpack(opt._state)
        self.owner = owner
        self.params, self.buffers = params, buffers
        self.optimizers = owner.optimizers
        self.opt_params = [
            [p for g in o.param_groups for p in g["params"]] for o in owner.optimizers
        ]

        arg_leaves: list[mx.array] = []
        self.args_spec = _pack((args, kwargs), arg_leaves, inputs=True)
        grads = []
        for i, p in enumerate(params if with_grads else ()):
            g = p.grad
            if isinstance(g, SparseGrad):
                raise TypeError(
                    f"lucid.compile: a parameter of shape {p.shape} has a row-sparse "
                    "gradient; lucid.compile does not support those yet"
                )
            if g is not None:
                grads.append(i)
        self.grads = grads
        get = _DATA.__get__  # Parameter.data without its property's Python frame
        inputs = arg_leaves + [get(p) for p in params]
        inputs += [params[i].grad.data for i in grads] + [b.data for b in buffers]
        self.with_grads = with_grads
        structure: list[Any] = [self.args_spec, with_grads, tuple(grads), len(buffers)]
        structure.append(tuple(training))
        self.hypers, self.steps = [], []
        for opt, ps in zip(self.optimizers, self.opt_params, strict=True):
            steps = {}  # the count of each parameter (the buckets are unpacked above)
            for p in ps:
                # sorted, so that the key does not depend on the order in which a rule
                # (or init_state) made the dict
                state = opt._state[p]
                order = tuple(state)
                keys = _SORTED_KEYS.get(order)
                if keys is None:
                    keys = _SORTED_KEYS[order] = tuple(sorted(k for k in order if k != "step"))
                inputs += [state[k] for k in keys]
                structure.append(keys)
                steps[p] = step_value(state["step"])
            self.steps.append(steps)
            self.hypers.append(self._hyperparameters(opt, steps, inputs, structure))
        self.key = tuple(structure)
        self.inputs = inputs
        self.n_args = len(arg_leaves)

    @staticmethod
    def _hyperparameters(opt: Any, counts: dict, inputs: list, structure: list) -> list[dict]:
        """Each group's hyperparameters for each step count its parameters will reach,
        computed on the host as an eager step computes them (they join ``inputs``)."""
        out = []
        for gi, group in enumerate(opt.param_groups):
            where = f"param group {gi}"
            _, signature = opt._group_config(where, group)  # the eager step's (memoised) checks
            steps = [counts[p] + 1 for p in group["params"]]
            distinct = sorted(set(steps))
            hypers = {t: opt._hyperparameters(where, group, t) for t in distinct}
            for t in distinct:
                inputs += [hypers[t][k] for k in sorted(hypers[t])]
            structure.append((signature[1], tuple(distinct.index(t) for t in steps)))
            out.append(hypers)
        return out

    # ------------------------------------------------------------------ trace side
    def snapshot(self) -> list[Any]:
        """Everything a trace points elsewhere, to put back after it."""
        return [
            [(_DATA.__get__(p), p.grad, p._version) for p in self.params],
            [b.data for b in self.buffers],
            [dict(o._state) for o in self.optimizers],
        ]

    def restore(self, saved: list[Any]) -> None:
        for p, (data, grad, version) in zip(self.params, saved[0], strict=True):
            _DATA.__set__(p, data)
            p.grad, p._version = grad, version
        for b, data in zip(self.buffers, saved[1], strict=True):
            b.data = data
        for o, state in zip(self.optimizers, saved[2], strict=True):
            o._state.clear()
            o._state.update(state)

    def point_at(self, inputs: list[mx.array]) -> tuple[tuple, dict]:
        """Point every object at the tracers in ``inputs``; return fn's arguments."""
        it = iter(inputs)
        args = [next(it) for _ in range(self.n_args)]
        for p in self.params:
            p.data = next(it)
        if self.with_grads:
            for i in self.grads:
                self.params[i].grad = Tensor(next(it))
        else:
            for p in self.params:
                p.grad = _PLACEHOLDER
        for b in self.buffers:
            b.data = next(it)
        for opt, ps, hypers in zip(self.optimizers, self.opt_params, self.hypers, strict=True):
            for p in ps:
                state = opt._state[p]
                opt._state[p] = {
                    "step": state["step"],
                    **{k: next(it) for k in sorted(k for k in state if k != "step")},
                }
            for per_step in hypers:
                for h in per_step.values():
                    for k in sorted(h):
                        h[k] = next(it)
        for a, spec in zip(args, _leaf_specs(self.args_spec), strict=True):
            known = spec[-1]
            if known is not None:
                bounds.note_range(a, *known)
        return _unpack(self.args_spec, args, results=False)

    # ------------------------------------------------------------------ after the call
    def finish(self, layout: _Layout, outputs: list[mx.array], key: mx.array) -> Any:
        """Write the call's results into the objects; return ``fn``'s result.

        The index checks that ``fn`` made join :mod:`lucid.bounds`' pending checks, with
        the undoing of this call: the next read of a value (``loss.item()``) evaluates
        them with it, as in eager lucid, and a bad index puts every object (and the
        random key) back as it was before the call, then raises. Evaluating them here
        instead would cost a synchronisation per call (measured on the small-op model:
        ~5% of the step), and rolling back after it would keep the old arrays alive
        while the new ones are computed, so that MLX could not reuse their buffers.
        """
        n_params, n_buffers = len(self.params), len(self.buffers)
        n = layout.n_results
        results = outputs[:n]
        datas = outputs[n : n + n_params]
        buffers = outputs[n + n_params : n + n_params + n_buffers]
        it = iter(outputs[n + n_params + n_buffers :])
        states = [[[next(it) for _ in keys] for keys in per] for per in layout.state_keys]
        grads = [next(it) for _ in layout.grads]
        if layout.checks:
            saved = self.snapshot()

            def undo() -> None:
                self.restore(saved)
                _reseed(key)

            bounds.defer([bounds.Pending(next(it), next(it), r, undo) for r in layout.checks])
        put = _DATA.__set__  # Parameter.data's setter, without its Python frame
        for p, data in zip(self.params, datas, strict=True):
            put(p, data)
            p._version += 1
        for b, data in zip(self.buffers, buffers, strict=True):
            b.data = data
        for i in layout.cleared:
            self.params[i].grad = None
        for i, g in zip(layout.grads, grads, strict=True):
            self.params[i].grad = _wrap(g)
        for opt, ps, keys, new, moved, counts in zip(
            self.optimizers, self.opt_params, layout.state_keys, states, layout.stepped,
            self.steps, strict=True,
        ):  # fmt: skip
            table = opt._state
            for p, names, arrays in zip(ps, keys, new, strict=True):
                table[p] = {"step": table[p]["step"], **dict(zip(names, arrays, strict=True))}
            for i in moved:  # the counters advance on the host
                p = ps[i]
                table[p]["step"] = step_array(counts[p] + 1)
        return _unpack(layout.result, results)


def _gather(owner: Compiled) -> tuple[list, list, list]:
    """The listed objects' modules, parameters (the modules', then the optimizers' others)
    and buffers, each once, in a fixed order."""
    modules = _modules_of(owner.modules)
    params, buffers, seen, own_buffers = [], [], set(), []
    for m in modules:
        for p in m._parameters.values():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        own_buffers.extend(b for b in m._buffers.values() if b is not None)
    for opt in owner.optimizers:
        for g in opt.param_groups:
            for p in g["params"]:
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
    for b in own_buffers:
        if id(b) not in seen:
            seen.add(id(b))
            buffers.append(b)
    return modules, params, buffers


#: a state dict's keys in the order a rule made them -> its keys but "step", sorted
_SORTED_KEYS: dict[tuple, tuple] = {}


def _modules_of(roots: Iterable[Any]) -> list[Any]:
    """Every module under ``roots``, each once, in ``Module.modules()`` order (pre-order,
    children in registration order). ``modules()`` builds each dotted name on the way;
    this runs every call (26 modules of the small-op model: ~60 µs there, ~15 µs here)."""
    out, seen = [], set()
    stack = list(roots)[::-1]
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        out.append(m)
        stack.extend(c for c in reversed(m.__dict__["_modules"].values()) if c is not None)
    return out


# ---------------------------------------------------------------------------- trees
def _pack(tree: Any, leaves: list[mx.array], inputs: bool = False) -> Any:
    """The spec of ``tree`` (hashable): Tensors and arrays become positions in ``leaves``;
    other values stay as they are (constants of the trace)."""
    if isinstance(tree, Tensor):
        leaves.append(tree.data)
        return ("T", tree.requires_grad, *_leaf_key(tree.data, inputs))
    if isinstance(tree, mx.array):
        leaves.append(tree)
        return ("A", False, *_leaf_key(tree, inputs))
    if isinstance(tree, (list, tuple)):
        return (type(tree), tuple(_pack(v, leaves, inputs) for v in tree))
    if isinstance(tree, dict):
        return (dict, tuple((k, _pack(v, leaves, inputs)) for k, v in tree.items()))
    try:
        hash(tree)
    except TypeError:
        raise TypeError(
            f"lucid.compile: arguments and results must be Tensors, mx.arrays, lists, tuples, "
            f"dicts or hashable constants; got a {type(tree).__name__}"
        ) from None
    return ("C", tree)


def _leaf_key(a: mx.array, inputs: bool) -> tuple:
    if not inputs:
        return ()
    return (tuple(a.shape), str(a.dtype), bounds.known_range(a))


def _leaf_specs(spec: Any) -> list[tuple]:
    if spec[0] in ("T", "A"):
        return [spec]
    if spec[0] == "C":
        return []
    items = spec[1] if spec[0] is not dict else [v for _, v in spec[1]]
    return [leaf for s in items for leaf in _leaf_specs(s)]


def _unpack(spec: Any, leaves: list[mx.array], results: bool = True) -> Any:
    """The tree of ``spec`` with ``leaves`` in place; result Tensors are values (no graph,
    no ``requires_grad``), argument Tensors keep their flag."""
    it = iter(leaves)

    def build(s: Any) -> Any:
        kind = s[0]
        if kind == "T":
            return Tensor(next(it), requires_grad=s[1] and not results)
        if kind == "A":
            return next(it)
        if kind == "C":
            return s[1]
        if kind is dict:
            return {k: build(v) for k, v in s[1]}
        return kind(build(v) for v in s[1])

    return build(spec)


def _wrap(a: mx.array) -> Tensor:
    """``Tensor(a)`` for an array that needs no conversion nor check (a gradient written
    back: one per parameter per call, and ``Tensor()`` converts and validates)."""
    t = Tensor.__new__(Tensor)
    t.data, t.grad, t.requires_grad = a, None, False
    t._parents, t._backward, t._op = (), None, ""
    return t


def _reseed(key: mx.array) -> None:
    """Put MLX's global random key back to ``key`` (``mx.random.key(s)`` is
    ``[s >> 32, s & 0xFFFFFFFF]``; the state object itself cannot be assigned to)."""
    hi, lo = (int(v) for v in key.tolist())
    mx.random.seed((hi << 32) | lo)


def _name(fn: Callable) -> str:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__name__", type(fn).__name__)
