"""Adagrad: per-coordinate step sizes from the running sum of squared gradients."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import mlx.core as mx

from . import checks
from .optimizer import Optimizer
from .terms import Hyper, State, prepare, store, weight_decay_mode, working_dtype

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    r"""Adagrad (Duchi, Hazan and Singer, 2011), as lucid's spec states it.

    For each parameter :math:`\theta` with gradient :math:`g`, at its step :math:`t`
    (counting from 1):

    .. math::

        g &\leftarrow -g \quad \text{if maximize} \\
        \text{lr}_t &= \text{lr} / (1 + (t - 1)\,\text{lr\_decay}) \\
        \theta &\leftarrow \theta\,(1 - \text{lr}_t\,\text{wd})
            \quad \text{if wd} \ne 0 \text{ and decoupled\_weight\_decay (default)} \\
        g &\leftarrow g + \text{wd}\,\theta
            \quad \text{if wd} \ne 0 \text{ and not decoupled\_weight\_decay} \\
        G &\leftarrow G + g^2, \qquad G_0 = \text{initial\_accumulator\_value} \\
        \theta &\leftarrow \theta - \text{lr}_t\, g / (\sqrt{G} + \epsilon)

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate (default ``1e-2``).
        eps: added to :math:`\sqrt{G}`, outside the square root (default ``1e-10``).
        weight_decay: decay coefficient ``wd`` (default ``0``).
        initial_accumulator_value: starting value of :math:`G` (default ``0``).
        lr_decay: learning-rate decay per step (default ``0``).
        maximize: ascend the objective instead of descending it (default ``False``).
        decoupled_weight_decay: decay the parameters directly, as the spec says
            (default ``True``); ``False`` gives PyTorch's coupled L2 term.

    Every numeric argument must be finite and ``>= 0``; the error names the one that is
    not (``TypeError`` for a value of the wrong type, ``ValueError`` for one out of
    range). ``lr`` may also be a schedule, a callable ``step -> lr``. Parameters whose
    ``grad`` is ``None`` are skipped: their state and step do not advance. State per
    parameter: ``"step"`` (float32 scalar) and ``"sum"`` (:math:`G`, in the parameter's
    dtype). Half-precision parameters are updated in float32 and rounded back once;
    float64 ones in float64.

    How lucid differs from its peers:

    - PyTorch: weight decay is *decoupled* by default (``decoupled_weight_decay=False``
      reproduces ``torch.optim.Adagrad`` exactly).
    - MLX (``mlx.optimizers.Adagrad``): eps ``1e-8`` there, and no weight decay,
      ``lr_decay`` or ``initial_accumulator_value``.
    - optax and Keras: eps inside the square root, :math:`\sqrt{G + \epsilon}`, and an
      initial accumulator of ``0.1``.

    Row-sparse gradients (:class:`lucid.SparseGrad`, from ``nn.Embedding(sparse=True)``):
    repeated rows are summed first, then the rule above runs on the touched rows only,
    and the other rows of :math:`\theta` and :math:`G` stay as they are. The step count,
    ``lr_decay``, ``maximize`` and ``initial_accumulator_value`` work as in the dense
    case, so with ``weight_decay=0`` a sparse step equals the dense one. Weight decay
    (either mode) is *lazy*: it reaches a row only on steps that touch it, where the dense
    step decays every row every step. (PyTorch refuses weight decay with sparse
    gradients.) Cost and memory follow the rows touched, not the table; see
    :meth:`update_rows`.

    Example::

        opt = lucid.optim.Adagrad(model.parameters(), lr=0.01)
        opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
    """

    elementwise = True
    supports_sparse = True
    checks = {
        "lr": checks.LEARNING_RATE,
        "eps": checks.NON_NEGATIVE,
        "weight_decay": checks.NON_NEGATIVE,
        "initial_accumulator_value": checks.NON_NEGATIVE,
        "lr_decay": checks.NON_NEGATIVE,
        "maximize": checks.FLAG,
        "decoupled_weight_decay": checks.FLAG,
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        eps: float = 1e-10,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        *,
        lr_decay: float = 0.0,
        maximize: bool = False,
        decoupled_weight_decay: bool = True,
    ) -> None:
        defaults = dict(
            lr=lr,
            eps=eps,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            lr_decay=lr_decay,
            maximize=maximize,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)

    def init_state(self, param: mx.array, group: dict[str, Any]) -> State:
        return {"sum": mx.full(param.shape, group["initial_accumulator_value"], dtype=param.dtype)}

    def step_hyperparameters(self, group: dict[str, Any], t: int) -> dict[str, float]:
        """``lr_t = lr / (1 + (t - 1) lr_decay)``, computed in float64 as PyTorch does."""
        lr = group["lr"] / (1 + (t - 1) * group["lr_decay"])
        return {"lr": lr, "eps": group["eps"], "weight_decay": group["weight_decay"]}

    def static_config(self, group: dict[str, Any]) -> dict[str, Any]:
        decay = weight_decay_mode(group, "decoupled_weight_decay")
        return {"maximize": group["maximize"], "decay": decay}

    @staticmethod
    def rule(
        param: mx.array,
        grad: mx.array,
        state: State,
        hyper: Hyper,
        *,
        maximize: bool = False,
        decay: str = "none",
    ) -> tuple[mx.array, State]:
        """The rule on one parameter; pure, so ``mx.compile`` can fuse it."""
        work = working_dtype(param.dtype)
        p, g = prepare(param, grad, hyper, maximize=maximize, decay=decay)
        G = store(state["sum"].astype(work) + g * g, param.dtype)
        p = p - hyper["lr"] * g / (mx.sqrt(G.astype(work)) + hyper["eps"])
        return p.astype(param.dtype), {"sum": G}

    @staticmethod
    def rule_rows(
        param: mx.array,
        index: mx.array,
        grad: mx.array,
        valid: mx.array,
        param_rows: mx.array,
        state: State,
        hyper: Hyper,
        *,
        maximize: bool = False,
        decay: str = "none",
    ) -> tuple[mx.array, State]:
        """The rule on the rows ``index`` (distinct where ``valid``) of one parameter.

        Neither table is gathered before it is written (a pending gather of a table in
        the evaluation that scatters into it makes MLX copy the table): ``G`` is
        scatter-added first and its new rows gathered from the result, and ``θ``'s rows
        come from ``param_rows`` (recorded by the forward lookup), the new rows being put
        back with one scatter.
        """
        on = valid[:, None]
        p, g = prepare(param_rows, grad, hyper, maximize=maximize, decay=decay)
        G = state["sum"].at[index].add(mx.where(on, g * g, 0).astype(param.dtype))
        p = p - hyper["lr"] * g / (
            mx.sqrt(G[index].astype(working_dtype(param.dtype))) + hyper["eps"]
        )
        return put_rows(param, index, valid, p), {"sum": G}


def put_rows(table: mx.array, index: mx.array, valid: mx.array, rows: mx.array) -> mx.array:
    """``table`` with ``rows[i]`` written at row ``index[i]`` where ``valid[i]``; one scatter.

    Padding rows name row ``index[0]``: they get its new value, so every write agrees."""
    rows = rows[mx.where(valid, mx.arange(valid.shape[0]), 0)]
    return mx.put_along_axis(table, index[:, None], rows.astype(table.dtype), axis=0)
