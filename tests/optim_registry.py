"""The registry of lucid's optimizers that the family tests iterate over.

Each :class:`Spec` names a lucid optimizer, its reference (a ``torch.optim`` class, or
``mlx.optimizers.Lion`` for Lion, which torch lacks), configurations that together turn
every option on and off (torch's own ``test/optim`` inputs were the source: each flag
alone, weight decay in each mode, then the flags together), and bad hyperparameters.

A configuration is ``(defaults, second_group)``: the keyword arguments of the optimizer,
and the hyperparameters that the second of the two parameter groups overrides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import lucid.optim as optim

Config = tuple[dict[str, Any], dict[str, Any]]


@dataclass(frozen=True)
class Spec:
    name: str
    configs: list[Config]
    bad: list[tuple[str, Any, type]] = field(default_factory=list)
    reference: str = "torch"  # "torch" (torch.optim.<name>), "mlx" (mlx.optimizers), ""
    matrices_only: bool = False  # Muon takes 2-D parameters only
    sparse: bool = False  # takes row-sparse gradients
    dense: bool = True  # takes dense gradients (SparseAdam does not)
    # torch has no "step" in this optimizer's state (lucid always keeps one)
    torch_has_step: bool = True
    # lucid's own keyword arguments, left out of the torch call (their torch value is set)
    lucid_only: tuple[str, ...] = ()
    # float32 parity tolerance, when it has to be looser than the family's (with the reason)
    f32_tolerance: dict[str, float] | None = None

    @property
    def cls(self) -> type[optim.Optimizer]:
        return getattr(optim, self.name)

    def __repr__(self) -> str:
        return self.name


def _numbers(*names: str) -> list[tuple[str, Any, type]]:
    """A negative, an infinite and a string value for each of ``names``."""
    out = []
    for n in names:
        out += [(n, -0.5, ValueError), (n, math.inf, ValueError), (n, "0.1", TypeError)]
    return out


LR = 0.05
SPECS = [
    Spec(
        "SGD",
        [
            ({"lr": LR}, {"lr": 0.1}),
            ({"lr": LR, "momentum": 0.9}, {"momentum": 0.5, "dampening": 0.3}),
            ({"lr": LR, "momentum": 0.9, "nesterov": True}, {"weight_decay": 0.1}),
            ({"lr": LR, "weight_decay": 0.1, "maximize": True}, {"weight_decay": 0.0}),
            ({"lr": LR, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.05}, {"lr": 0.01}),
        ],
        bad=_numbers("lr", "momentum", "weight_decay") + [("nesterov", 1, TypeError)],
        sparse=True,
        torch_has_step=False,
    ),
    Spec(
        "ASGD",
        [
            ({"lr": LR}, {"lr": 0.1}),
            ({"lr": LR, "lambd": 0.1, "t0": 5}, {"alpha": 0.5}),
            ({"lr": LR, "weight_decay": 0.1, "maximize": True}, {"t0": 3}),
        ],
        bad=_numbers("lr", "lambd", "alpha", "t0", "weight_decay"),
    ),
    Spec(
        "Adagrad",
        [
            ({"lr": LR, "decoupled_weight_decay": False}, {"lr": 0.1}),
            ({"lr": LR, "lr_decay": 0.1, "decoupled_weight_decay": False}, {"eps": 1e-6}),
            # torch ignores a per-group initial_accumulator_value (it reads the default
            # when it makes the state): the second group keeps the default here
            (
                {"lr": LR, "initial_accumulator_value": 0.1, "decoupled_weight_decay": False},
                {"weight_decay": 0.1},
            ),  # fmt: skip
            (
                {"lr": LR, "weight_decay": 0.1, "maximize": True, "decoupled_weight_decay": False},
                {"lr_decay": 0.05},
            ),  # fmt: skip
        ],
        bad=_numbers("lr", "eps", "weight_decay", "lr_decay", "initial_accumulator_value"),
        sparse=True,
        lucid_only=("decoupled_weight_decay",),
    ),
    Spec(
        "RMSprop",
        [
            ({"lr": 0.01}, {"lr": 0.02}),
            ({"lr": 0.01, "momentum": 0.9}, {"alpha": 0.9}),
            ({"lr": 0.01, "centered": True}, {"weight_decay": 0.1}),
            ({"lr": 0.01, "centered": True, "momentum": 0.5, "maximize": True}, {"eps": 1e-4}),
        ],
        bad=_numbers("lr", "alpha", "eps", "weight_decay", "momentum")
        + [("centered", "no", TypeError)],
    ),
    Spec(
        "Adadelta",
        [
            ({}, {"lr": 0.5}),
            ({"rho": 0.8, "weight_decay": 0.1}, {"eps": 1e-4}),
            ({"maximize": True}, {"rho": 0.95}),
        ],
        bad=_numbers("lr", "eps", "weight_decay") + [("rho", 1.5, ValueError)],
    ),
    Spec(
        "Rprop",
        [
            ({"lr": 0.01}, {"lr": 0.02}),
            ({"lr": 0.01, "etas": (0.3, 1.5)}, {"step_sizes": (1e-4, 0.05)}),
            ({"lr": 0.01, "maximize": True}, {"etas": (0.6, 1.1)}),
        ],
        bad=_numbers("lr")
        + [("etas", (1.5, 1.2), ValueError), ("step_sizes", (1.0, 0.1), ValueError)],
    ),
    Spec(
        "Adam",
        [
            ({"lr": 0.01}, {"lr": 0.02}),
            ({"lr": 0.01, "amsgrad": True}, {"betas": (0.8, 0.99)}),
            ({"lr": 0.01, "weight_decay": 0.1}, {"weight_decay": 0.0}),
            ({"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}, {"eps": 1e-4}),
            ({"lr": 0.01, "maximize": True, "amsgrad": True, "weight_decay": 0.05}, {"lr": 0.005}),
        ],
        bad=_numbers("lr", "eps", "weight_decay")
        + [("betas", (0.9, 1.0), ValueError), ("betas", 0.9, TypeError)],
        sparse=True,
    ),
    Spec(
        "AdamW",
        [
            ({"lr": 0.01}, {"lr": 0.02}),
            ({"lr": 0.01, "amsgrad": True}, {"weight_decay": 0.1}),
            ({"lr": 0.01, "maximize": True}, {"betas": (0.5, 0.9)}),
        ],
        bad=_numbers("lr", "eps", "weight_decay") + [("amsgrad", None, TypeError)],
        sparse=True,
    ),
    Spec(
        "SparseAdam",
        [
            ({"lr": 0.01}, {"lr": 0.02}),
            ({"lr": 0.01, "maximize": True}, {"betas": (0.8, 0.99)}),
        ],
        bad=[("lr", 0.0, ValueError), ("eps", 0.0, ValueError), ("lr", "x", TypeError)],
        sparse=True,
        dense=False,
    ),
    Spec(
        "Adamax",
        [
            ({"lr": 0.01}, {"lr": 0.02}),
            ({"lr": 0.01, "weight_decay": 0.1}, {"betas": (0.8, 0.99)}),
            ({"lr": 0.01, "maximize": True}, {"eps": 1e-4}),
        ],
        bad=_numbers("lr", "eps", "weight_decay"),
    ),
    Spec(
        "NAdam",
        [
            ({"lr": 0.01}, {"lr": 0.02}),
            ({"lr": 0.01, "momentum_decay": 0.01}, {"weight_decay": 0.1}),
            ({"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}, {"lr": 0.005}),
            ({"lr": 0.01, "maximize": True}, {"betas": (0.8, 0.99)}),
        ],
        bad=_numbers("lr", "eps", "weight_decay", "momentum_decay"),
    ),
    Spec(
        "RAdam",
        [
            ({"lr": 0.01}, {"lr": 0.02}),
            ({"lr": 0.01, "weight_decay": 0.1}, {"betas": (0.8, 0.9)}),
            ({"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}, {"eps": 1e-4}),
            ({"lr": 0.01, "maximize": True}, {"lr": 0.005}),
        ],
        bad=_numbers("lr", "eps", "weight_decay"),
    ),
    Spec(
        "Lion",
        [
            ({"lr": 1e-3}, {}),
            ({"lr": 1e-3, "weight_decay": 0.1}, {}),
            ({"lr": 1e-3, "betas": (0.8, 0.95)}, {}),
        ],
        bad=_numbers("lr", "weight_decay") + [("betas", (1.0, 0.9), ValueError)],
        reference="mlx",
    ),
    Spec(
        "Adafactor",
        [
            ({"lr": 0.01}, {"lr": 0.02}),
            ({"lr": 0.01, "weight_decay": 0.1}, {"beta2_decay": -0.5}),
            ({"lr": 0.01, "eps": (1e-6, 1e-3), "d": 2.0}, {"weight_decay": 0.05}),
            ({"lr": 0.01, "maximize": True}, {"eps": (None, 1e-2)}),
        ],
        bad=_numbers("lr", "weight_decay")
        + [("beta2_decay", 0.5, ValueError), ("d", 0.5, ValueError)],
    ),
    Spec(
        "Muon",
        [
            ({"lr": 0.02}, {"lr": 0.01}),
            ({"lr": 0.02, "nesterov": False}, {"momentum": 0.9}),
            ({"lr": 0.02, "adjust_lr_fn": "match_rms_adamw"}, {"weight_decay": 0.0}),
            ({"lr": 0.02, "ns_steps": 3, "weight_decay": 0.01}, {"adjust_lr_fn": "original"}),
        ],
        bad=_numbers("lr", "weight_decay", "momentum")
        + [("ns_steps", 0, ValueError), ("adjust_lr_fn", "fast", ValueError)],
        matrices_only=True,
        torch_has_step=False,
        # Newton-Schulz runs in bfloat16 (as in torch): where lucid's and torch's bfloat16
        # GEMMs round an entry differently (another summation order), it moves by one
        # bfloat16 ulp, 2^-8 of the update, i.e. lr * 4e-3 = 8e-5 of a parameter unit;
        # measured over 30 steps: up to 2.3e-4 (0.13 / 1024 of the largest entry)
        f32_tolerance={"rtol": 1e-5, "atol": 5e-4},
    ),
]

BY_NAME = {s.name: s for s in SPECS}
DENSE = [s for s in SPECS if s.dense]
WITH_TORCH = [s for s in DENSE if s.reference == "torch"]
