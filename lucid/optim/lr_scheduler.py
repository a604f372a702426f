"""Learning-rate schedulers with ``torch.optim.lr_scheduler``'s API and numbers.

A scheduler writes ``group["lr"]`` (and, for :class:`CyclicLR` and :class:`OneCycleLR`,
``group["momentum"]`` or ``group["betas"][0]``) between optimizer steps. The optimizer
passes every hyperparameter into its compiled step as an array, so a new value each step
never retraces (``optimizer.trace_count`` stays where the first step left it).

Semantics follow torch 2.13 exactly, to float64 rounding:

- ``step()`` advances ``last_epoch`` and updates the rates *recursively* where torch does
  (each factor multiplies the current ``group["lr"]``, so schedulers chain:
  :class:`ChainedScheduler` runs several on the same groups). The deprecated
  ``step(epoch)`` sets ``last_epoch`` and uses the closed form where one exists.
- Construction performs the first step (``last_epoch`` becomes 0) and records each
  group's ``initial_lr`` (kept if present); ``base_lrs`` are those values. Resuming with
  ``last_epoch=k`` needs ``initial_lr`` in every group (a loaded optimizer state dict
  carries it) and raises ``KeyError`` otherwise, as torch does.
- ``state_dict()`` holds every attribute except the optimizer and functions (lambdas are
  code, as in torch: a callable object's ``__dict__`` is saved instead). The values are
  plain numbers, strings, lists and dicts, so :func:`lucid.save` can write them.

Differences from torch: arguments are validated at construction (a ``ValueError``
naming the argument, the value and what was expected, before anything changes); a group
whose ``lr`` is a schedule function (``lucid.optim.schedules``) cannot also be driven
by a scheduler; ``state_dict()`` returns a copy (later steps do not reach it);
:class:`ReduceLROnPlateau` leaves ``mode_worse`` (derived from ``mode``) out of its
state dict; no warning about calling ``scheduler.step()`` before
``optimizer.step()``.

Also here: :class:`NoamScheduler`, the Transformer warm-up of upstream lucid.
"""

from __future__ import annotations

import copy
import math
import numbers
import types
import warnings
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .optimizer import Optimizer

__all__ = [
    "LRScheduler",
    "LambdaLR",
    "MultiplicativeLR",
    "StepLR",
    "MultiStepLR",
    "ConstantLR",
    "LinearLR",
    "ExponentialLR",
    "PolynomialLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "OneCycleLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "ChainedScheduler",
    "NoamScheduler",
]

_EPOCH_DEPRECATED = (
    "scheduler.step(epoch) is deprecated (as in torch): it sets last_epoch and uses the "
    "closed form where one exists. Call scheduler.step() instead."
)


# ---------------------------------------------------------------------------- validation


def _real(owner: str, name: str, value: Any, low: float = -math.inf, high: float = math.inf,
          *, low_open: bool = False, high_open: bool = False) -> float:  # fmt: skip
    """``value`` as a finite real number in the interval, or a ``ValueError`` naming it."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    if not ok:
        interval = (
            f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
            if math.isfinite(low) or math.isfinite(high)
            else "(-inf, inf)"
        )
        raise ValueError(f"{owner}: {name} must be a finite number in {interval}; got {value!r}")
    return value


def _int(owner: str, name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{owner}: {name} must be an int >= {low}; got {value!r}")
    return int(value)


def _choice(owner: str, name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{owner}: {name} must be one of {list(allowed)}; got {value!r}")
    return value


def _per_group(owner: str, name: str, optimizer: Optimizer, value: Any,
               low: float = 0.0, high: float = math.inf) -> list[float]:  # fmt: skip
    """One number per parameter group: ``value`` repeated, or a list of that length."""
    n = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(
                f"{owner}: {name} has {len(value)} values; the optimizer has {n} param groups"
            )
        return [_real(owner, f"{name}[{i}]", v, low, high) for i, v in enumerate(value)]
    return [_real(owner, name, value, low, high)] * n


def _check_optimizer(owner: str, optimizer: Any) -> None:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{owner}: {type(optimizer).__name__} is not a lucid.optim.Optimizer")
    for i, group in enumerate(optimizer.param_groups):
        if callable(group["lr"]):
            raise ValueError(
                f"{owner}: param group {i} has a schedule function as its lr; a scheduler "
                "sets the lr itself (give the optimizer a number, or drop the scheduler)"
            )


def _cycles_momentum(owner: str, optimizer: Optimizer) -> bool:
    """Whether the optimizer's groups have ``betas`` (else ``momentum``) to cycle."""
    if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise ValueError(
            f"{owner}: cycle_momentum=True needs an optimizer with momentum or betas; "
            f"{type(optimizer).__name__} has neither (pass cycle_momentum=False)"
        )
    return "betas" in optimizer.defaults


def _set_momentum(group: dict[str, Any], value: float, use_beta1: bool) -> None:
    if use_beta1:
        group["betas"] = (value, *group["betas"][1:])
    else:
        group["momentum"] = value


def _lrs(optimizer: Optimizer) -> list[float]:
    return [group["lr"] for group in optimizer.param_groups]


# ---------------------------------------------------------------------------- base


class LRScheduler:
    """Base class: subclasses define :meth:`get_lr` (and optionally ``_closed_form``).

    Args:
        optimizer: the :class:`~lucid.optim.Optimizer` whose groups it drives.
        last_epoch: the index of the last step taken; ``-1`` starts the schedule. A value
            ``>= 0`` resumes it, and needs ``initial_lr`` in every group.
    """

    #: attributes that state_dict() leaves out (the optimizer, functions, flags)
    _unsaved: tuple[str, ...] = ("optimizer", "_is_initial")
    #: True only during the step taken at construction
    _is_initial: bool = False

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        owner = type(self).__name__
        _check_optimizer(owner, optimizer)
        _int(owner, "last_epoch", last_epoch, -1)
        if last_epoch != -1:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"{owner}: param group {i} has no 'initial_lr', needed to resume "
                        f"with last_epoch={last_epoch}; load the optimizer's state dict "
                        "(which carries it) before building the scheduler"
                    )
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        self.base_lrs: list[float] = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self) -> None:
        """The step every scheduler takes when it is built (``last_epoch`` -1 -> 0)."""
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self) -> list[float]:
        """The rates for ``last_epoch`` (called by :meth:`step`; use :meth:`get_last_lr`)."""
        raise NotImplementedError

    def get_last_lr(self) -> list[float]:
        """The rates the last :meth:`step` set, one per parameter group."""
        return list(self._last_lr)

    def step(self, epoch: int | None = None) -> None:
        """Advance one step (call it after ``optimizer.step()``). ``epoch`` is deprecated,
        as in torch: it sets ``last_epoch`` and uses the closed form where one exists."""
        self._step_count += 1
        if epoch is not None:
            warnings.warn(_EPOCH_DEPRECATED, UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = epoch
            closed = getattr(self, "_closed_form", None)
            values = closed() if closed is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            group["lr"] = lr
        self._last_lr = _lrs(self.optimizer)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Every attribute but the optimizer and functions, as a copy."""
        return copy.deepcopy({k: v for k, v in vars(self).items() if k not in self._unsaved})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load what :meth:`state_dict` returned. Its keys must be this scheduler's: a
        ``ValueError`` names the missing and unknown ones, and nothing changes."""
        mine = self.state_dict()
        given = _checked_keys(type(self).__name__, state_dict, mine)
        self.__dict__.update(copy.deepcopy(given))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, lr={self._last_lr})"


#: keys that torch's schedulers save and lucid's do not (transient flags); ignored on load
_TORCH_ONLY = {"_get_lr_called_within_step", "_is_initial", "verbose", "mode_worse"}


def _checked_keys(owner: str, state_dict: Any, mine: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(state_dict, dict):
        raise ValueError(f"{owner}.load_state_dict: expected a dict; got {type(state_dict)}")
    given = {k: v for k, v in state_dict.items() if k not in _TORCH_ONLY}
    missing, unknown = sorted(set(mine) - set(given)), sorted(set(given) - set(mine), key=str)
    if missing or unknown:
        raise ValueError(
            f"{owner}.load_state_dict: missing keys {missing}, unknown keys {unknown}; "
            "was it saved from another kind of scheduler?"
        )
    return given


def _lambdas(owner: str, optimizer: Optimizer, lr_lambda: Any) -> list[Callable[[int], float]]:
    n = len(optimizer.param_groups)
    if isinstance(lr_lambda, (list, tuple)):
        if len(lr_lambda) != n:
            raise ValueError(
                f"{owner}: expected {n} lr_lambdas (one per group); got {len(lr_lambda)}"
            )
        fns = list(lr_lambda)
    else:
        fns = [lr_lambda] * n
    for i, fn in enumerate(fns):
        if not callable(fn):
            raise TypeError(f"{owner}: lr_lambda[{i}] must be a function; got {type(fn).__name__}")
    return fns


class _LambdaScheduler(LRScheduler):
    """A scheduler driven by ``lr_lambda`` (one function, or one per group). Its state
    dict saves functions as ``None`` and callable objects as a copy of their ``__dict__``
    (torch's convention)."""

    _unsaved = (*LRScheduler._unsaved, "lr_lambdas")

    def __init__(self, optimizer: Optimizer,
                 lr_lambda: Callable[[int], float] | list[Callable[[int], float]],
                 last_epoch: int = -1) -> None:  # fmt: skip
        _check_optimizer(type(self).__name__, optimizer)
        self.lr_lambdas = _lambdas(type(self).__name__, optimizer, lr_lambda)
        super().__init__(optimizer, last_epoch)

    def state_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k not in (*self._unsaved, "lr_lambdas")}
        out = copy.deepcopy(out)
        out["lr_lambdas"] = [
            None if isinstance(fn, types.FunctionType) else copy.deepcopy(fn.__dict__)
            for fn in self.lr_lambdas
        ]
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        given = _checked_keys(type(self).__name__, state_dict, self.state_dict())
        saved = given["lr_lambdas"]
        if not isinstance(saved, list) or len(saved) != len(self.lr_lambdas):
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: lr_lambdas must be a list of "
                f"{len(self.lr_lambdas)}; got {saved!r:.80}"
            )
        self.__dict__.update(copy.deepcopy({k: v for k, v in given.items() if k != "lr_lambdas"}))
        for fn, attrs in zip(self.lr_lambdas, saved, strict=True):
            if attrs is not None:
                fn.__dict__.update(copy.deepcopy(attrs))


# ---------------------------------------------------------------------------- by a factor


class LambdaLR(_LambdaScheduler):
    r"""``lr = initial_lr * lr_lambda(last_epoch)`` (one function, or one per group)."""

    def get_lr(self) -> list[float]:
        return [
            base * fn(self.last_epoch)
            for fn, base in zip(self.lr_lambdas, self.base_lrs, strict=True)
        ]


class MultiplicativeLR(_LambdaScheduler):
    r"""``lr <- lr * lr_lambda(last_epoch)`` at every step after the first (recursive)."""

    def get_lr(self) -> list[float]:
        if self._is_initial:
            return _lrs(self.optimizer)
        groups = self.optimizer.param_groups
        return [
            g["lr"] * fn(self.last_epoch) for fn, g in zip(self.lr_lambdas, groups, strict=True)
        ]


class StepLR(LRScheduler):
    r"""``lr = initial_lr * gamma ** (last_epoch // step_size)``: a factor ``gamma`` every
    ``step_size`` steps (applied recursively, so it composes with other changes)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1) -> None:  # fmt: skip
        self.step_size = _int("StepLR", "step_size", step_size, 1)
        self.gamma = _real("StepLR", "gamma", gamma, 0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return _lrs(self.optimizer)
        return [g["lr"] * self.gamma for g in self.optimizer.param_groups]

    def _closed_form(self) -> list[float]:
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    r"""``lr = initial_lr * gamma ** (number of milestones <= last_epoch)`` (a milestone
    listed twice counts twice)."""

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1,
                 last_epoch: int = -1) -> None:  # fmt: skip
        stones = list(milestones) if isinstance(milestones, Iterable) else milestones
        if not isinstance(stones, list):
            raise ValueError(f"MultiStepLR: milestones must be a list of ints; got {milestones!r}")
        for i, m in enumerate(stones):
            _int("MultiStepLR", f"milestones[{i}]", m, 0)
        self.milestones = Counter(int(m) for m in stones)
        self.gamma = _real("MultiStepLR", "gamma", gamma, 0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch not in self.milestones:
            return _lrs(self.optimizer)
        factor = self.gamma ** self.milestones[self.last_epoch]
        return [g["lr"] * factor for g in self.optimizer.param_groups]

    def _closed_form(self) -> list[float]:
        n = bisect_right(sorted(self.milestones.elements()), self.last_epoch)
        return [base * self.gamma**n for base in self.base_lrs]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # a checkpoint holds a plain dict (possibly with str keys, after JSON)
        self.milestones = Counter({int(k): v for k, v in dict(self.milestones).items()})


class ConstantLR(LRScheduler):
    r"""``lr = initial_lr * factor`` while ``last_epoch < total_iters``, then ``initial_lr``."""

    def __init__(self, optimizer: Optimizer, factor: float = 1.0 / 3, total_iters: int = 5,
                 last_epoch: int = -1) -> None:  # fmt: skip
        self.factor = _real("ConstantLR", "factor", factor, 0.0, 1.0)
        self.total_iters = _int("ConstantLR", "total_iters", total_iters, 0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0:
            return [g["lr"] * self.factor for g in self.optimizer.param_groups]
        if self.last_epoch != self.total_iters:
            return _lrs(self.optimizer)
        return [g["lr"] * (1.0 / self.factor) for g in self.optimizer.param_groups]

    def _closed_form(self) -> list[float]:
        done = self.last_epoch >= self.total_iters
        return [base * (self.factor + done * (1 - self.factor)) for base in self.base_lrs]


class LinearLR(LRScheduler):
    r"""The factor moves linearly from ``start_factor`` to ``end_factor`` over
    ``total_iters`` steps: ``lr = initial_lr * (s + (e - s) * min(t, T) / T)``; updated
    recursively, as torch does."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5,
                 last_epoch: int = -1) -> None:  # fmt: skip
        self.start_factor = _real("LinearLR", "start_factor", start_factor, 0.0, 1.0, low_open=True)
        self.end_factor = _real("LinearLR", "end_factor", end_factor, 0.0, 1.0)
        self.total_iters = _int("LinearLR", "total_iters", total_iters, 1)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        s, e, t = self.start_factor, self.end_factor, self.last_epoch
        if t == 0:
            return [g["lr"] * s for g in self.optimizer.param_groups]
        if self._is_initial or t > self.total_iters:
            return _lrs(self.optimizer)
        ratio = 1.0 + (e - s) / (self.total_iters * s + (t - 1) * (e - s))
        return [g["lr"] * ratio for g in self.optimizer.param_groups]

    def _closed_form(self) -> list[float]:
        s, e, total = self.start_factor, self.end_factor, self.total_iters
        return [
            base * (s + (e - s) * min(total, self.last_epoch) / total) for base in self.base_lrs
        ]


class ExponentialLR(LRScheduler):
    r"""``lr = initial_lr * gamma ** last_epoch`` (one factor ``gamma`` per step)."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = _real("ExponentialLR", "gamma", gamma, 0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self._is_initial:
            return _lrs(self.optimizer)
        return [g["lr"] * self.gamma for g in self.optimizer.param_groups]

    def _closed_form(self) -> list[float]:
        return [base * self.gamma**self.last_epoch for base in self.base_lrs]


class PolynomialLR(LRScheduler):
    r"""``lr = initial_lr * (1 - min(t, T) / T) ** power`` with ``T = total_iters``."""

    def __init__(self, optimizer: Optimizer, total_iters: int = 5, power: float = 1.0,
                 last_epoch: int = -1) -> None:  # fmt: skip
        self.total_iters = _int("PolynomialLR", "total_iters", total_iters, 1)
        self.power = _real("PolynomialLR", "power", power, 0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        t, total = self.last_epoch, self.total_iters
        if self._is_initial or t > total:
            return _lrs(self.optimizer)
        factor = ((1.0 - t / total) / (1.0 - (t - 1) / total)) ** self.power
        return [g["lr"] * factor for g in self.optimizer.param_groups]

    def _closed_form(self) -> list[float]:
        t, total = self.last_epoch, self.total_iters
        return [base * (1.0 - min(total, t) / total) ** self.power for base in self.base_lrs]


# ---------------------------------------------------------------------------- cosine


class CosineAnnealingLR(LRScheduler):
    r"""Cosine annealing from ``initial_lr`` to ``eta_min`` over ``T_max`` steps (SGDR,
    Loshchilov & Hutter 2017, without restarts):

    .. math:: \eta_t = \eta_{min} + \tfrac12(\eta_0 - \eta_{min})(1 + \cos(\pi t / T_{max}))

    computed recursively as torch does, :math:`\eta_t = \eta_{min} + (\eta_{t-1} -
    \eta_{min}) \frac{1 + \cos(\pi t/T)}{1 + \cos(\pi (t-1)/T)}`; past ``T_max`` the rate
    rises again along the same cosine."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,  # noqa: N803
                 last_epoch: int = -1) -> None:  # fmt: skip
        self.T_max = _int("CosineAnnealingLR", "T_max", T_max, 1)
        self.eta_min = _real("CosineAnnealingLR", "eta_min", eta_min, 0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        t, big_t, low = self.last_epoch, self.T_max, self.eta_min
        groups = self.optimizer.param_groups
        if self._is_initial:
            return _lrs(self.optimizer)
        if self._step_count == 1 and t > 0:
            return [
                low + (base - low) * (1 + math.cos(t * math.pi / big_t)) / 2
                for base in self.base_lrs
            ]
        if (t - 1 - big_t) % (2 * big_t) == 0:  # the bottom, where the recursion divides by 0
            return [
                g["lr"] + (base - low) * (1 - math.cos(math.pi / big_t)) / 2
                for base, g in zip(self.base_lrs, groups, strict=True)
            ]
        ratio = (1 + math.cos(math.pi * t / big_t)) / (1 + math.cos(math.pi * (t - 1) / big_t))
        return [ratio * (g["lr"] - low) + low for g in groups]

    def _closed_form(self) -> list[float]:
        t, low = self.last_epoch, self.eta_min
        return [
            low + (base - low) * (1 + math.cos(math.pi * t / self.T_max)) / 2
            for base in self.base_lrs
        ]


class CosineAnnealingWarmRestarts(LRScheduler):
    r"""Cosine annealing with warm restarts (SGDR): the cosine of
    :class:`CosineAnnealingLR` over :math:`T_i` steps, restarting at ``initial_lr``;
    :math:`T_0` = ``T_0``, :math:`T_{i+1} = T_i \cdot` ``T_mult``.

    .. math:: \eta_t = \eta_{min} + \tfrac12(\eta_0 - \eta_{min})(1 + \cos(\pi T_{cur}/T_i))

    ``step(epoch)`` takes a (fractional) epoch, as torch's does, without a warning."""

    def __init__(self, optimizer: Optimizer, T_0: int, T_mult: int = 1,  # noqa: N803
                 eta_min: float = 0.0, last_epoch: int = -1) -> None:  # fmt: skip
        owner = "CosineAnnealingWarmRestarts"
        self.T_0 = _int(owner, "T_0", T_0, 1)
        self.T_i = self.T_0
        self.T_mult = _int(owner, "T_mult", T_mult, 1)
        self.eta_min = _real(owner, "eta_min", eta_min, 0.0)
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        low, cos = self.eta_min, math.cos(math.pi * self.T_cur / self.T_i)
        return [low + (base - low) * (1 + cos) / 2 for base in self.base_lrs]

    def step(self, epoch: float | None = None) -> None:
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            _real(type(self).__name__, "epoch", epoch, 0.0)
            if epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:  # which cycle: T_0 (m^n - 1) / (m - 1) <= epoch
                    m = self.T_mult
                    n = int(math.log(epoch / self.T_0 * (m - 1) + 1, m))
                    self.T_cur = epoch - self.T_0 * (m**n - 1) / (m - 1)
                    self.T_i = self.T_0 * m**n
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = _lrs(self.optimizer)


# ---------------------------------------------------------------------------- cycles


class CyclicLR(LRScheduler):
    r"""Cyclical learning rates (Smith, 2017): the rate goes linearly from ``base_lr`` up
    to ``max_lr`` in ``step_size_up`` steps and back in ``step_size_down``; momentum (or
    ``betas[0]``) goes the other way between ``max_momentum`` and ``base_momentum``.

    With :math:`c = \lfloor 1 + t / S \rfloor` (``S`` the cycle length), :math:`x = 1 + t/S
    - c` and :math:`h = x / r` going up (``r`` the up fraction), :math:`(x - 1)/(r - 1)`
    going down: ``lr = base_lr + (max_lr - base_lr) * h * scale``, with ``scale`` 1
    (``"triangular"``), :math:`2^{1-c}` (``"triangular2"``), :math:`\gamma^t`
    (``"exp_range"``) or ``scale_fn`` of ``c`` or ``t`` (``scale_mode``). Writes
    ``base_momentum`` and ``max_momentum`` into the groups, as torch does."""

    _unsaved = (*LRScheduler._unsaved, "_scale_fn_ref", "_scale_fn_custom")

    def __init__(
        self,
        optimizer: Optimizer,
        base_lr: float | list[float],
        max_lr: float | list[float],
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: str = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable[[float], float] | None = None,
        scale_mode: str = "cycle",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.8,
        max_momentum: float | list[float] = 0.9,
        last_epoch: int = -1,
    ) -> None:
        owner = "CyclicLR"
        _check_optimizer(owner, optimizer)
        _int(owner, "last_epoch", last_epoch, -1)
        base_lrs = _per_group(owner, "base_lr", optimizer, base_lr)
        max_lrs = _per_group(owner, "max_lr", optimizer, max_lr)
        up = float(_real(owner, "step_size_up", step_size_up, 0.0, low_open=True))
        down = up
        if step_size_down is not None:
            down = float(_real(owner, "step_size_down", step_size_down, 0.0, low_open=True))
        if scale_fn is None:
            _choice(owner, "mode", mode, ("triangular", "triangular2", "exp_range"))
        elif not callable(scale_fn):
            raise TypeError(f"{owner}: scale_fn must be a function; got {type(scale_fn).__name__}")
        _choice(owner, "scale_mode", scale_mode, ("cycle", "iterations"))
        _real(owner, "gamma", gamma, 0.0)
        if not isinstance(cycle_momentum, bool):
            raise ValueError(f"{owner}: cycle_momentum must be a bool; got {cycle_momentum!r}")
        if cycle_momentum:
            use_beta1 = _cycles_momentum(owner, optimizer)
            base_moms = _per_group(owner, "base_momentum", optimizer, base_momentum)
            max_moms = _per_group(owner, "max_momentum", optimizer, max_momentum)
        # everything is valid: now the groups change
        self.optimizer = optimizer
        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups, strict=True):
                group["lr"] = lr
        self.max_lrs = max_lrs
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        self._init_scale_fn()
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = use_beta1
            self.base_momentums, self.max_momentums = base_moms, max_moms
            if last_epoch == -1:
                for hi, lo, group in zip(max_moms, base_moms, optimizer.param_groups, strict=True):
                    _set_momentum(group, hi, use_beta1)
                    group["max_momentum"] = hi
                    group["base_momentum"] = lo
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def _init_scale_fn(self) -> None:
        if self._scale_fn_custom is not None:
            return
        if self.mode == "triangular":
            self._scale_fn_ref, self.scale_mode = (lambda x: 1.0), "cycle"
        elif self.mode == "triangular2":
            self._scale_fn_ref, self.scale_mode = (lambda x: 1 / (2.0 ** (x - 1))), "cycle"
        else:
            gamma = self.gamma
            self._scale_fn_ref, self.scale_mode = (lambda x: gamma**x), "iterations"

    def scale_fn(self, x: float) -> float:
        """The amplitude's scale at cycle (or iteration) ``x``."""
        fn = self._scale_fn_custom if self._scale_fn_custom is not None else self._scale_fn_ref
        return fn(x)

    def get_lr(self) -> list[float]:
        t = self.last_epoch
        cycle = math.floor(1 + t / self.total_size)
        x = 1.0 + t / self.total_size - cycle
        up = x <= self.step_ratio
        height = x / self.step_ratio if up else (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else t)
        lrs = [
            base + (top - base) * height * scale
            for base, top in zip(self.base_lrs, self.max_lrs, strict=True)
        ]
        if self.cycle_momentum:
            moms = [
                top - (top - base) * height * scale
                for base, top in zip(self.base_momentums, self.max_momentums, strict=True)
            ]
            for group, m in zip(self.optimizer.param_groups, moms, strict=True):
                _set_momentum(group, m, self.use_beta1)
        return lrs

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        fn = self._scale_fn_custom
        keep = fn is not None and not isinstance(fn, types.FunctionType)
        out["_scale_fn_custom"] = copy.deepcopy(fn.__dict__) if keep else None
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        given = _checked_keys(type(self).__name__, state_dict, self.state_dict())
        fn = given["_scale_fn_custom"]
        self.__dict__.update(
            copy.deepcopy({k: v for k, v in given.items() if k != "_scale_fn_custom"})
        )
        if fn is not None and self._scale_fn_custom is not None:
            self._scale_fn_custom.__dict__.update(copy.deepcopy(fn))
        self._init_scale_fn()


class OneCycleLR(LRScheduler):
    r"""The 1cycle policy (Smith & Topin, 2018): the rate anneals from
    ``max_lr / div_factor`` up to ``max_lr`` over the first ``pct_start`` of
    ``total_steps``, then down to ``initial_lr / final_div_factor``; with
    ``three_phase``, back to the initial rate symmetrically first, then down. Momentum
    (or ``betas[0]``) anneals inversely between ``max_momentum`` and ``base_momentum``.
    Annealing is cosine, :math:`a + (b - a)(1 - \cos(\pi p))/2`, or linear. Writes
    ``initial_lr``, ``max_lr``, ``min_lr``, ``max_momentum`` and ``base_momentum`` into the
    groups, as torch does. Stepping past ``total_steps`` raises ``ValueError``."""

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | list[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.85,
        max_momentum: float | list[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        owner = "OneCycleLR"
        _check_optimizer(owner, optimizer)
        _int(owner, "last_epoch", last_epoch, -1)
        if total_steps is not None:
            total = _int(owner, "total_steps", total_steps, 1)
        elif epochs is not None and steps_per_epoch is not None:
            total = _int(owner, "epochs", epochs, 1) * _int(
                owner, "steps_per_epoch", steps_per_epoch, 1
            )
        else:
            raise ValueError(f"{owner}: give total_steps, or both epochs and steps_per_epoch")
        pct = _real(owner, "pct_start", pct_start, 0.0, 1.0)
        self._anneal_func_type = _choice(
            owner, "anneal_strategy", anneal_strategy, ("cos", "linear")
        )
        max_lrs = _per_group(owner, "max_lr", optimizer, max_lr)
        div = _real(owner, "div_factor", div_factor, 0.0, low_open=True)
        final_div = _real(owner, "final_div_factor", final_div_factor, 0.0, low_open=True)
        if not isinstance(three_phase, bool) or not isinstance(cycle_momentum, bool):
            raise ValueError(
                f"{owner}: three_phase and cycle_momentum must be bools; got "
                f"{three_phase!r}, {cycle_momentum!r}"
            )
        if cycle_momentum:
            use_beta1 = _cycles_momentum(owner, optimizer)
            max_moms = _per_group(owner, "max_momentum", optimizer, max_momentum)
            base_moms = _per_group(owner, "base_momentum", optimizer, base_momentum)
        # everything is valid: now the groups change
        self.optimizer = optimizer
        self.total_steps = total
        up_end, mid_end = float(pct * total) - 1, float(2 * pct * total) - 2
        if three_phase:
            phases = [
                (up_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (mid_end, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                (total - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"),
            ]
        else:
            phases = [
                (up_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (total - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"),
            ]
        keys = ("end_step", "start_lr", "end_lr", "start_momentum", "end_momentum")
        self._schedule_phases = [dict(zip(keys, p, strict=True)) for p in phases]
        if last_epoch == -1:
            for top, group in zip(max_lrs, optimizer.param_groups, strict=True):
                group["initial_lr"] = top / div
                group["max_lr"] = top
                group["min_lr"] = group["initial_lr"] / final_div
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = use_beta1
            if last_epoch == -1:
                for hi, lo, group in zip(max_moms, base_moms, optimizer.param_groups, strict=True):
                    _set_momentum(group, hi, use_beta1)
                    group["max_momentum"] = hi
                    group["base_momentum"] = lo
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> list[float]:
        t = self.last_epoch
        if t > self.total_steps:
            raise ValueError(
                f"OneCycleLR: tried to step {t} times; total_steps is {self.total_steps}"
            )
        lrs = []
        last = len(self._schedule_phases) - 1
        for group in self.optimizer.param_groups:
            start = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end = phase["end_step"]
                if t <= end or i == last:
                    pct = (t - start) / (end - start)
                    lr = self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct)
                    if self.cycle_momentum:
                        m = self._anneal(
                            group[phase["start_momentum"]], group[phase["end_momentum"]], pct
                        )
                    break
                start = end
            lrs.append(lr)
            if self.cycle_momentum:
                _set_momentum(group, m, self.use_beta1)
        return lrs


# ---------------------------------------------------------------------------- on a metric


class ReduceLROnPlateau(LRScheduler):
    r"""Multiply the rate by ``factor`` (down to ``min_lr``) once the metric given to
    ``step(metric)`` has not improved for more than ``patience`` steps, then wait
    ``cooldown`` steps before counting again.

    Improvement in mode ``"min"``: ``metric < best * (1 - threshold)`` (``"rel"``) or
    ``metric < best - threshold`` (``"abs"``); mode ``"max"`` mirrors it. A reduction
    smaller than ``eps`` is skipped. Writes no ``initial_lr``, as torch."""

    _unsaved = (*LRScheduler._unsaved, "mode_worse")

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float | list[float] = 0,
        eps: float = 1e-8,
    ) -> None:
        owner = "ReduceLROnPlateau"
        _check_optimizer(owner, optimizer)
        self.factor = _real(owner, "factor", factor, 0.0, 1.0, high_open=True)
        if isinstance(min_lr, (list, tuple)):
            self.min_lrs = _per_group(owner, "min_lr", optimizer, min_lr)
            self.default_min_lr = None
        else:
            self.default_min_lr = _real(owner, "min_lr", min_lr, 0.0)
            self.min_lrs = [min_lr] * len(optimizer.param_groups)
        self.patience = _int(owner, "patience", patience, 0)
        self.cooldown = _int(owner, "cooldown", cooldown, 0)
        self.eps = _real(owner, "eps", eps, 0.0)
        self.mode = _choice(owner, "mode", mode, ("min", "max"))
        self.threshold = _real(owner, "threshold", threshold, 0.0)
        self.threshold_mode = _choice(owner, "threshold_mode", threshold_mode, ("rel", "abs"))
        self.optimizer = optimizer
        self.last_epoch = 0
        self._last_lr = _lrs(optimizer)
        self._reset()

    @property
    def mode_worse(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    def _reset(self) -> None:
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def is_better(self, a: float, best: float) -> bool:
        """Whether metric ``a`` improves on ``best`` by more than the threshold."""
        if self.threshold_mode == "rel":
            bar = (
                best * (1.0 - self.threshold)
                if self.mode == "min"
                else best * (self.threshold + 1.0)
            )
        else:
            bar = best - self.threshold if self.mode == "min" else best + self.threshold
        return a < bar if self.mode == "min" else a > bar

    def step(self, metrics: Any, epoch: int | None = None) -> None:  # type: ignore[override]
        """Take one metric value (a number, or a one-element Tensor or array)."""
        current = float(metrics)
        if math.isnan(current):
            raise ValueError("ReduceLROnPlateau.step: the metric is nan")
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(_EPOCH_DEPRECATED, UserWarning, stacklevel=2)
        self.last_epoch = epoch
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad steps in the cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = _lrs(self.optimizer)

    def _reduce_lr(self) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(
                    f"ReduceLROnPlateau: the optimizer has {len(groups)} param groups, "
                    f"min_lr has {len(self.min_lrs)} (a group was added since); set min_lrs"
                )
            self.min_lrs = [self.default_min_lr] * len(groups)
        for i, group in enumerate(groups):
            old = float(group["lr"])
            new = max(old * self.factor, self.min_lrs[i])
            if old - new > self.eps:
                group["lr"] = new

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        _choice("ReduceLROnPlateau", "mode", self.mode, ("min", "max"))
        _choice("ReduceLROnPlateau", "threshold_mode", self.threshold_mode, ("rel", "abs"))
        if self.best is None:  # as an earlier lucid saved it before the first metric
            self.best = self.mode_worse

    def __repr__(self) -> str:
        return f"ReduceLROnPlateau(best={self.best}, lr={self._last_lr})"


# ---------------------------------------------------------------------------- composites


def _check_members(owner: str, schedulers: Any, optimizer: Optimizer | None) -> Optimizer:
    if not isinstance(schedulers, (list, tuple)) or not schedulers:
        raise ValueError(f"{owner}: schedulers must be a non-empty list; got {schedulers!r:.80}")
    optimizer = optimizer if optimizer is not None else getattr(schedulers[0], "optimizer", None)
    for i, s in enumerate(schedulers):
        if not isinstance(s, LRScheduler):
            raise TypeError(f"{owner}: schedulers[{i}] is a {type(s).__name__}, not a scheduler")
        if isinstance(s, ReduceLROnPlateau):
            raise ValueError(
                f"{owner}: schedulers[{i}] is a ReduceLROnPlateau, whose step needs a metric"
            )
        if s.optimizer is not optimizer:
            raise ValueError(
                f"{owner}: schedulers[{i}] ({type(s).__name__}) drives another optimizer; "
                "all must drive the same one"
            )
    return optimizer


class _Composite(LRScheduler):
    """state_dict for schedulers of schedulers: each member's state, in order."""

    _schedulers: list[LRScheduler]
    _unsaved = (*LRScheduler._unsaved, "_schedulers")

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        given = _checked_keys(type(self).__name__, state_dict, self.state_dict())
        members = given["_schedulers"]
        if not isinstance(members, list) or len(members) != len(self._schedulers):
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: _schedulers must be a list of "
                f"{len(self._schedulers)} state dicts"
            )
        # every member's keys first, so a bad one changes nothing
        for s, sd in zip(self._schedulers, members, strict=True):
            _checked_keys(type(s).__name__, sd, s.state_dict())
        self.__dict__.update(copy.deepcopy({k: v for k, v in given.items() if k != "_schedulers"}))
        for s, sd in zip(self._schedulers, members, strict=True):
            s.load_state_dict(sd)


class SequentialLR(_Composite):
    """Run ``schedulers[i]`` between ``milestones[i-1]`` and ``milestones[i]``; at a
    milestone the next scheduler restarts from its closed form at step 0 (as torch).
    E.g. ``SequentialLR(opt, [LinearLR(opt, 0.01, total_iters=100),
    CosineAnnealingLR(opt, T_max=900)], milestones=[100])`` warms up, then anneals."""

    def __init__(self, optimizer: Optimizer, schedulers: list[LRScheduler],
                 milestones: list[int], last_epoch: int = -1) -> None:  # fmt: skip
        owner = "SequentialLR"
        _check_optimizer(owner, optimizer)
        _check_members(owner, schedulers, optimizer)
        if not isinstance(milestones, (list, tuple)) or len(milestones) != len(schedulers) - 1:
            raise ValueError(
                f"{owner}: milestones must list {len(schedulers) - 1} steps (one fewer than "
                f"schedulers); got {milestones!r}"
            )
        for i, m in enumerate(milestones):
            _int(owner, f"milestones[{i}]", m, 1)
        if any(a >= b for a, b in zip(milestones[:-1], milestones[1:], strict=True)):
            raise ValueError(f"{owner}: milestones must increase; got {list(milestones)}")
        _int(owner, "last_epoch", last_epoch, -1)
        self._schedulers = list(schedulers)
        self._milestones = list(milestones)
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        for group in optimizer.param_groups:  # undo the members' first steps
            group["lr"] = group["initial_lr"]
        self._undo(self)
        first = self._schedulers[bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    def _undo(self, scheduler: LRScheduler) -> None:
        if isinstance(scheduler, _Composite):
            for s in scheduler._schedulers:
                self._undo(s)
        elif scheduler is not self:
            scheduler.last_epoch -= 1

    def step(self) -> None:  # type: ignore[override]
        self.last_epoch += 1
        i = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[i]
        if i > 0 and self._milestones[i - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()


class ChainedScheduler(_Composite):
    """Step every scheduler in turn at each step; their recursive factors multiply, e.g.
    ``ChainedScheduler([LinearLR(opt, 0.1, total_iters=10), ExponentialLR(opt, 0.99)])``."""

    def __init__(self, schedulers: Sequence[LRScheduler],
                 optimizer: Optimizer | None = None) -> None:  # fmt: skip
        owner = "ChainedScheduler"
        if optimizer is not None:
            _check_optimizer(owner, optimizer)
        self.optimizer = _check_members(owner, schedulers, optimizer)
        self._schedulers = list(schedulers)
        self._last_lr = _lrs(self.optimizer)

    def step(self) -> None:  # type: ignore[override]
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = _lrs(self.optimizer)


# ---------------------------------------------------------------------------- Noam


class NoamScheduler(LRScheduler):
    r"""The Transformer's warm-up then inverse-square-root decay (Vaswani et al., 2017),
    as upstream lucid's ``NoamScheduler``:

    .. math::

        \text{lr}(t) = \text{factor} \cdot d^{-1/2} \cdot
            \min\left(s^{-1/2},\ s \cdot w^{-3/2}\right), \qquad s = \max(t, 1)

    with ``t = last_epoch``, ``d = model_size`` and ``w = warmup_steps``: linear growth
    for ``w`` steps, peaking at :math:`\text{factor}\,(d\,w)^{-1/2}`, then :math:`\propto
    t^{-1/2}`. The rate is absolute: the optimizer's own ``lr`` is not used (every group
    gets the same value)."""

    def __init__(self, optimizer: Optimizer, model_size: int, warmup_steps: int,
                 factor: float = 1.0, last_epoch: int = -1) -> None:  # fmt: skip
        self.model_size = _int("NoamScheduler", "model_size", model_size, 1)
        self.warmup_steps = _int("NoamScheduler", "warmup_steps", warmup_steps, 1)
        self.factor = _real("NoamScheduler", "factor", factor, 0.0, low_open=True)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        s = max(self.last_epoch, 1)
        lr = self.factor * self.model_size**-0.5 * min(s**-0.5, s * self.warmup_steps**-1.5)
        return [lr] * len(self.optimizer.param_groups)

    _closed_form = get_lr
