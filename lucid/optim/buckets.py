"""Flat buckets: many small parameters updated as one array.

An elementwise rule gives the same result on a concatenation of tensors as on each
tensor alone, and MLX's cost on many small tensors is per array, not per element
(measured on MLX 0.32 CPU, 2000 tensors of 1024 floats: one compiled call over the
2000 tensors took 45.7 ms, over one flat bucket 18.5 ms; ~12 µs of dispatch per tensor
against ~4 µs per concatenated input). So the optimizer keeps the parameters and the
state of small tensors in flat arrays between steps:

- a bucket holds parameters of one dtype, step count and shape past the first axis
  (:func:`layout`), laid end to end along that axis: vectors make a 1-D array, ``(n, 64)``
  matrices an ``(N, 64)`` one, so no member is reshaped on the way in or out;
- each parameter's ``.data`` is a view (a slice, no copy) of the bucket's array;
  the next step reuses that array as long as no ``.data`` was assigned since (each
  assignment bumps ``Parameter._version``), and the optimizer forms the bucket anew
  when one was;
- the state lives only in the bucket; :meth:`FlatBucket.unpack_state` hands back
  per-parameter arrays when someone reads ``optimizer.state``.

Only the gradients are concatenated each step.
"""

from __future__ import annotations

import itertools

import mlx.core as mx

from ..nn.parameter import Parameter
from .counters import step_array, step_value

__all__ = ["FlatBucket", "Buckets", "SMALL", "layout"]

State = dict[str, mx.array]

#: parameters with at most this many elements go into a bucket. Above it the per-array
#: cost is small next to the arithmetic, and bucketing only adds copies (measured on the
#: model-shaped set B, 256x768 matrices: per-tensor was faster than bucketed).
SMALL = 16384


def layout(shape: tuple[int, ...]) -> tuple[int, ...]:
    """What parameters must share to join one bucket without a reshape: their shape past
    the first axis (``()`` for vectors, ``(64,)`` for every ``(n, 64)`` matrix); a scalar
    joins the vectors, as one element. (Measured, 256 arrays of an
    ``mlx.nn`` model, 64 of them 64x64: reshaping each matrix in and out of a 1-D bucket
    cost 128 graph nodes, ~0.4 ms of a 4.1 ms step.)"""
    return shape[1:]  # () for a scalar too


class FlatBucket:
    """Parameters of one dtype, one step count and one :func:`layout`, stored as one
    array: their rows laid end to end along the first axis."""

    def __init__(self, params: list[Parameter], states: list[State], step: int) -> None:
        self.params = params
        self.shapes = [p.shape for p in params]
        self.bounds = list(itertools.accumulate(_rows(s) for s in self.shapes))[:-1]
        # the views that need a reshape (scalars only: the others are rows of the bucket)
        self.reshaped = [i for i, s in enumerate(self.shapes) if not s]
        self.step = step
        self.flat: mx.array = self.gather([p.data for p in params])
        self.versions: list[int] = []
        self.state: State = {k: self.gather([s[k] for s in states]) for k in states[0]}

    def gather(self, arrays: list[mx.array]) -> mx.array:
        """``arrays`` (one per member, shaped like it) laid out as this bucket."""
        if self.reshaped:
            arrays = list(arrays)
            for i in self.reshaped:
                arrays[i] = arrays[i].reshape(1)
        return mx.concatenate(arrays)

    def split(self, flat: mx.array) -> list[mx.array]:
        """A bucket-shaped array cut back into one array per member (no-copy slices)."""
        views = mx.split(flat, self.bounds)
        for i in self.reshaped:
            views[i] = views[i].reshape(self.shapes[i])
        return views

    def holds(self, params: list[Parameter]) -> bool:
        """Whether ``params`` are exactly this bucket's parameters, in order."""
        return len(params) == len(self.params) and all(
            a is b for a, b in zip(params, self.params, strict=True)
        )

    def intact(self) -> bool:
        """Whether no parameter's ``.data`` was assigned since the last step."""
        return not self.versions or all(
            p._version == v for p, v in zip(self.params, self.versions, strict=True)
        )

    def take_flat(self) -> mx.array:
        """The flat parameters for a step; the bucket lets go of them (so that MLX may
        reuse their buffer)."""
        flat, self.flat = self.flat, None
        return flat

    def hand_out(self, flat: mx.array, state: State, step: int) -> list[mx.array]:
        """Store the step's results and point each parameter at its slice of ``flat``."""
        views = self.split(flat)
        for p, v in zip(self.params, views, strict=True):
            p.data = v
        self.versions = [p._version for p in self.params]
        self.flat, self.state, self.step = flat, state, step
        return views

    def unpack_state(self) -> list[State]:
        """Per-parameter state arrays (slices of the bucket's flat state)."""
        parts = {k: self.split(v) for k, v in self.state.items()}
        return [{k: parts[k][i] for k in parts} for i in range(len(self.shapes))]


def _rows(shape: tuple[int, ...]) -> int:
    return shape[0] if shape else 1


class Buckets:
    """The flat buckets of one optimizer, by parameter group, and which parameter is where.

    A bucket holds the state of its members, so a member's entry in the optimizer's
    per-parameter ``states`` is absent while it is bucketed; :meth:`unpack` moves it back.
    """

    def __init__(self) -> None:
        self._of_group: dict[int, tuple[list[FlatBucket], frozenset[int]]] = {}
        self._of_param: dict[int, tuple[FlatBucket, int]] = {}

    @property
    def held(self) -> dict[int, tuple[FlatBucket, int]]:
        """``id(parameter) -> (bucket, index in it)`` for every bucketed parameter."""
        return self._of_param

    def __contains__(self, p: Parameter) -> bool:
        return id(p) in self._of_param

    def __bool__(self) -> bool:
        return bool(self._of_param)

    def shape_of(self, p: Parameter) -> tuple[int, ...]:
        bucket, j = self._of_param[id(p)]
        return bucket.shapes[j]

    def step_of(self, p: Parameter) -> int:
        return self._of_param[id(p)][0].step

    def unpack(self, states: dict[Parameter, State], index: int | None = None) -> list[mx.array]:
        """Move the state of the buckets of group ``index`` (default: all groups) back into
        ``states``; return the new, not yet evaluated, arrays."""
        unpacked = []
        for gi in list(self._of_group) if index is None else [index]:
            for b in self._of_group.pop(gi, ([], None))[0]:
                for p, s in zip(b.params, b.unpack_state(), strict=True):
                    states[p] = {"step": step_array(b.step), **s}
                    del self._of_param[id(p)]
                    unpacked.extend(s.values())
        return unpacked

    def form(
        self,
        index: int,
        small: list[Parameter],
        states: dict[Parameter, State],
        out: list[mx.array],
    ) -> list[FlatBucket]:
        """The buckets of group ``index`` for a step whose small active parameters are
        ``small``.

        The buckets of the last step are kept while the same small parameters step
        together and nobody assigned their ``.data`` (the steady state); otherwise they
        are unpacked and formed anew from the parameters' current arrays, one per
        (dtype, step count) with at least two members, since a bucket shares one step
        count. Unpacked state that this step does not consume is added to ``out``.
        """
        members = frozenset(id(p) for p in small)
        buckets, formed_for = self._of_group.get(index, ([], frozenset()))
        if members == formed_for and all(b.intact() for b in buckets):
            return buckets
        out.extend(self.unpack(states, index))
        classes: dict[tuple, list[Parameter]] = {}
        for p in small:
            key = (p.dtype, step_value(states[p]["step"]), layout(p.shape))
            classes.setdefault(key, []).append(p)
        buckets = []
        # one bucket per class: cutting a class into one bucket per stream was measured and
        # gained nothing (4M elements in 1,000 tensors: 13.9 ms in one bucket, 14.7-21.6
        # ms in two; 10,000 tensors: 73 vs 77 ms): a large update is bound by memory
        # bandwidth, which the two cores share
        for (_, t, _), ps in classes.items():
            if len(ps) < 2:
                continue
            inner = [_without_step(states.pop(p)) for p in ps]
            bucket = FlatBucket(ps, inner, t)
            buckets.append(bucket)
            self._of_param.update({id(p): (bucket, j) for j, p in enumerate(ps)})
        self._of_group[index] = (buckets, members)
        return buckets

    def snapshot(self) -> dict[Parameter, State]:
        """Every bucketed parameter's state, unpacked, leaving the buckets as they are."""
        return {
            p: {"step": step_array(b.step), **s}
            for buckets, _ in self._of_group.values()
            for b in buckets
            for p, s in zip(b.params, b.unpack_state(), strict=True)
        }


def _without_step(state: State) -> State:
    return {k: v for k, v in state.items() if k != "step"}
