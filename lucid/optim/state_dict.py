"""``state_dict`` and ``load_state_dict``: an optimizer's state in PyTorch's layout.

``{"state": {i: {"step": ..., <rule's keys>}}, "param_groups": [{..., "params": [i, ...]}]}``
with parameters numbered in order across groups. Loading validates everything before it
changes anything: on any error a ``ValueError`` names the group, the index and the key.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import mlx.core as mx

from . import checks
from .counters import step_array

if TYPE_CHECKING:
    from ..nn.parameter import Parameter
    from .optimizer import Optimizer

__all__ = ["build", "load", "SCHEDULER_KEYS"]

State = dict[str, mx.array]

#: keys that torch's learning-rate schedulers write into a parameter group (``initial_lr``
#: by every scheduler; the others by OneCycleLR and CyclicLR). A state dict may carry
#: them (torch's checkpoint procedure saves the optimizer after a scheduler has run);
#: they are accepted and restored, while other unknown keys are refused.
SCHEDULER_KEYS = ("initial_lr", "max_lr", "min_lr", "base_momentum", "max_momentum")


def build(opt: Optimizer) -> dict[str, Any]:
    """The state dict. Arrays are new objects (no data is copied): ``+=`` on an mx.array
    writes into that object, and must reach neither this optimizer nor the shared step
    counters. A schedule given as ``lr`` appears as its current value."""
    ids = {id(p): i for i, p in enumerate(opt._all_params())}
    state = {
        ids[id(p)]: {k: mx.array(v) for k, v in s.items()}
        for p, s in opt.state.items()
        if id(p) in ids
    }
    groups = []
    for g in opt.param_groups:
        saved = {k: v for k, v in g.items() if k != "params"}
        if callable(saved.get("lr")):
            saved["lr"] = opt._current_lr(g)
        saved["params"] = [ids[id(p)] for p in g["params"]]
        groups.append(saved)
    return {"state": dict(sorted(state.items())), "param_groups": groups}


def load(opt: Optimizer, state_dict: Any) -> None:
    """Validate ``state_dict`` against ``opt`` completely, then load it."""
    if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
        raise ValueError(
            "load_state_dict: expected a dict with exactly the keys 'state' and "
            f"'param_groups'; got {_describe_keys(state_dict)}"
        )
    groups, state = state_dict["param_groups"], state_dict["state"]
    if not isinstance(groups, list) or len(groups) != len(opt.param_groups):
        n = len(groups) if isinstance(groups, list) else type(groups).__name__
        raise ValueError(
            f"load_state_dict: 'param_groups' has {n} groups; this optimizer has "
            f"{len(opt.param_groups)}"
        )
    if not isinstance(state, dict):
        raise ValueError(f"load_state_dict: 'state' must be a dict; got {type(state).__name__}")

    new_groups = [_load_group(opt, gi, saved, mine) for gi, (saved, mine) in
                  enumerate(zip(groups, opt.param_groups, strict=True))]  # fmt: skip

    params = opt._all_params()
    saved_ids = [i for g in groups for i in g["params"]]
    if sorted(map(_as_int, saved_ids)) != list(range(len(params))):
        raise ValueError(
            f"load_state_dict: 'params' ids must be 0..{len(params) - 1}, each once; "
            f"got {saved_ids}"
        )
    where = {_as_int(i): (gi, j) for gi, g in enumerate(groups) for j, i in enumerate(g["params"])}
    by_id = {_as_int(i): p for i, p in zip(saved_ids, params, strict=True)}
    new_state: dict[Parameter, State] = {}
    for key, entry in state.items():
        i = _as_int(key)
        if i not in by_id:
            raise ValueError(f"load_state_dict: state key {key!r} names no parameter")
        gi, j = where[i]
        p = by_id[i]
        new_state[p] = _load_entry(opt, entry, p, new_groups[gi], f"param group {gi}, params[{j}]")
    for group in new_groups:  # never stepped in the saved run: fresh state, from the
        for p in group["params"]:  # loaded hyperparameters
            if p not in new_state:
                new_state[p] = {"step": step_array(0), **opt.init_state(p.data, group)}

    for mine, new in zip(opt.param_groups, new_groups, strict=True):
        mine.clear()
        mine.update(new)
    opt.state = new_state


def _load_group(opt: Optimizer, gi: int, saved: Any, mine: dict[str, Any]) -> dict[str, Any]:
    """The group as it will be after loading: the saved hyperparameters (validated), the
    scheduler keys it carries, and this optimizer's parameters."""
    if not isinstance(saved, dict):
        raise ValueError(f"load_state_dict: param group {gi} must be a dict")
    keys = set(saved) - {"params"}
    defaults = set(opt.defaults)
    unknown = sorted(keys - defaults - set(SCHEDULER_KEYS))
    missing = sorted(defaults - keys) + ([] if "params" in saved else ["params"])
    if unknown or missing:
        raise ValueError(
            f"load_state_dict: param group {gi}: unknown keys {unknown}, missing keys {missing}"
        )
    if not isinstance(saved["params"], list) or len(saved["params"]) != len(mine["params"]):
        raise ValueError(
            f"load_state_dict: param group {gi}: key 'params' lists "
            f"{_length(saved['params'])} parameters; this optimizer's group has "
            f"{len(mine['params'])}"
        )
    new = {k: v for k, v in saved.items() if k != "params"}
    # a schedule is code, like a LambdaLR function in torch: the state dict holds its
    # value, and the optimizer that loads it keeps its own schedule
    if callable(mine.get("lr")) and not callable(new["lr"]):
        new["lr"] = mine["lr"]
    scheduler = {k: checks.NON_NEGATIVE for k in SCHEDULER_KEYS}
    try:
        checks.run(type(opt).__name__, {**opt.checks, **scheduler}, new)
        opt.check_group(new)
    except (TypeError, ValueError) as e:
        raise ValueError(f"load_state_dict: param group {gi}: {e}") from e
    new["params"] = mine["params"]
    return new


def _load_entry(
    opt: Optimizer, entry: Any, p: Parameter, group: dict[str, Any], where: str
) -> State:
    template = {"step": step_array(0), **opt.init_state(p.data, group)}
    if not isinstance(entry, dict) or set(entry) != set(template):
        raise ValueError(
            f"load_state_dict: {where}: state keys {_describe_keys(entry)}; "
            f"expected {sorted(template)}"
        )
    out: State = {}
    for key, ref in template.items():
        value = entry[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and ref.ndim == 0:
            value = mx.array(float(value))  # torch keeps some scalars as Python numbers
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
                raise ValueError(f"load_state_dict: {where}, key 'step': {t} is not a count >= 0")
            out[key] = step_array(int(t))
        elif mx.issubdtype(value.dtype, mx.floating) or mx.issubdtype(value.dtype, mx.integer):
            # a new array object either way, so in-place edits of the caller's dict never
            # reach this optimizer
            out[key] = value.astype(ref.dtype) if value.dtype != ref.dtype else mx.array(value)
        else:
            raise ValueError(f"load_state_dict: {where}, key {key!r}: dtype {value.dtype}")
    return out


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
