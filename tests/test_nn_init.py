"""Initialisation: the formulas against torch.nn.init, and sample statistics of each scheme.

Statistical tolerances are set from the sample size: with n >= 1e5 draws the standard error
of a mean or a standard deviation is below 0.5% of the scale, so 3% leaves a wide margin.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import mlx.core as mx
import numpy as np
import pytest
import torch

import lucid
import lucid.nn as nn
from lucid.nn import init

STAT_RTOL = 0.03


def check_uniform(values: np.ndarray, bound: float) -> None:
    """Within [-bound, bound], reaching close to both ends, with U(-b, b)'s std b / sqrt(3)."""
    assert np.abs(values).max() <= bound * (1 + 1e-6)
    assert values.min() < -0.99 * bound and values.max() > 0.99 * bound
    assert abs(values.mean()) < STAT_RTOL * bound
    assert values.std() == pytest.approx(bound / math.sqrt(3), rel=STAT_RTOL)


def check_normal(values: np.ndarray, mean: float, std: float) -> None:
    assert abs(values.mean() - mean) < STAT_RTOL * std
    assert values.std() == pytest.approx(std, rel=STAT_RTOL)


@pytest.mark.parametrize(("fan_in", "fan_out"), [(1, 1), (3, 7), (512, 256), (1000, 100)])
def test_linear_bound_is_torchs_formula(fan_in: int, fan_out: int) -> None:
    """torch: kaiming_uniform_(a=sqrt(5)) => gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in)."""
    gain = torch.nn.init.calculate_gain("leaky_relu", math.sqrt(5))
    torch_bound = gain * math.sqrt(3.0 / fan_in)
    assert torch_bound == pytest.approx(1 / math.sqrt(fan_in), rel=1e-12)
    layer = nn.Linear(fan_in, fan_out)
    for p in (layer.weight, layer.bias):
        assert np.abs(p.numpy()).max() <= torch_bound * (1 + 1e-6)


def test_linear_samples_fill_the_bound() -> None:
    lucid.manual_seed(0)
    layer = nn.Linear(400, 500)
    check_uniform(layer.weight.numpy().ravel(), 1 / math.sqrt(400))
    big_bias = nn.Linear(400, 200_000).bias.numpy()
    check_uniform(big_bias, 1 / math.sqrt(400))


def test_embedding_is_standard_normal_and_layer_norm_is_ones_zeros() -> None:
    lucid.manual_seed(0)
    check_normal(nn.Embedding(1000, 200).weight.numpy().ravel(), 0.0, 1.0)
    norm = nn.LayerNorm((3, 4))
    np.testing.assert_array_equal(norm.weight.numpy(), np.ones((3, 4)))
    np.testing.assert_array_equal(norm.bias.numpy(), np.zeros((3, 4)))


def test_manual_seed_makes_init_reproducible() -> None:
    lucid.manual_seed(7)
    a = [p.numpy() for p in nn.Linear(5, 4).parameters()]
    lucid.manual_seed(7)
    b = [p.numpy() for p in nn.Linear(5, 4).parameters()]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


GAINS = [("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None)] + [
    ("leaky_relu", a) for a in (None, 0.2, math.sqrt(5))
]


@pytest.mark.parametrize(("nonlinearity", "param"), GAINS)
def test_calculate_gain_matches_torch(nonlinearity: str, param: float | None) -> None:
    expected = torch.nn.init.calculate_gain(nonlinearity, param)
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(expected, rel=1e-12)


SHAPE = (300, 200, 3)  # the trailing axis is a receptive field: fan_in 600, fan_out 900
FAN_IN, FAN_OUT = 600, 900

# (name, lucid fill, torch fill, kind, scale from the documented formula: bound or std)
SCHEMES = [
    (
        "uniform",
        lambda t: init.uniform_(t, -2.0, 2.0),
        lambda t: torch.nn.init.uniform_(t, -2.0, 2.0),
        "uniform",
        2.0,
    ),
    (
        "xavier_uniform",
        lambda t: init.xavier_uniform_(t, gain=2.0),
        lambda t: torch.nn.init.xavier_uniform_(t, gain=2.0),
        "uniform",
        2.0 * math.sqrt(6 / (FAN_IN + FAN_OUT)),
    ),
    (
        "kaiming_uniform",
        init.kaiming_uniform_,
        torch.nn.init.kaiming_uniform_,
        "uniform",
        math.sqrt(2) * math.sqrt(3 / FAN_IN),
    ),
    (
        "normal",
        lambda t: init.normal_(t, 0.0, 3.0),
        lambda t: torch.nn.init.normal_(t, 0.0, 3.0),
        "normal",
        3.0,
    ),
    (
        "xavier_normal",
        init.xavier_normal_,
        torch.nn.init.xavier_normal_,
        "normal",
        math.sqrt(2 / (FAN_IN + FAN_OUT)),
    ),
    (
        "kaiming_normal_fan_out",
        lambda t: init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu"),
        lambda t: torch.nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu"),
        "normal",
        math.sqrt(2) / math.sqrt(FAN_OUT),
    ),
]


def check_samples(values: np.ndarray, kind: str, scale: float) -> None:
    if kind == "uniform":
        check_uniform(values, scale)
    else:
        check_normal(values, 0.0, scale)


@pytest.mark.parametrize(
    ("name", "fill", "torch_fill", "kind", "scale"), SCHEMES, ids=[s[0] for s in SCHEMES]
)
def test_scheme_statistics_match_formula_and_torch(
    name: str, fill: Callable, torch_fill: Callable, kind: str, scale: float
) -> None:
    torch.manual_seed(0)
    check_samples(torch_fill(torch.empty(SHAPE)).numpy().ravel(), kind, scale)  # formula == torch
    lucid.manual_seed(0)
    t = nn.Parameter(mx.zeros(SHAPE))
    assert fill(t) is t and t.shape == SHAPE and t.dtype == mx.float32
    check_samples(t.numpy().ravel(), kind, scale)


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_init_keeps_dtype(dtype: mx.Dtype) -> None:
    t = nn.Parameter(mx.zeros((4, 3), dtype=dtype))
    for fill in (init.kaiming_uniform_, init.xavier_normal_, init.ones_, init.zeros_):
        assert fill(t).dtype == dtype


INIT_ERRORS = [
    ("gain", lambda: init.calculate_gain("swish"), "'swish'"),
    ("fan_mode", lambda: init.kaiming_uniform_(nn.Parameter(mx.zeros((2, 2))), mode="in"), "'in'"),
    ("fans_1d", lambda: init.xavier_uniform_(nn.Parameter(mx.zeros(3))), "(3,)"),
    ("bounds", lambda: init.uniform_(nn.Parameter(mx.zeros(3)), 1.0, 0.0), "a=1.0, b=0.0"),
    ("std", lambda: init.normal_(nn.Parameter(mx.zeros(3)), std=-1.0), "-1.0"),
]


@pytest.mark.parametrize(
    ("case", "action", "fragment"), INIT_ERRORS, ids=[c[0] for c in INIT_ERRORS]
)
def test_init_errors(case: str, action: Callable, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        action()
    assert fragment in str(info.value)
