"""The Adagrad example from lucid's spec (docs/spec: optim.Adagrad), made runnable.

The spec's code is kept verbatim, in order; the only additions are the two names it
leaves undefined, ``data`` and ``compute_loss`` (marked below), and a last block that
prints what training did.

Run:  python examples/quickstart.py
"""

# The spec's code is kept as written: its imports come late and in its order, and one line
# is long. Hence:
# ruff: noqa: E402, I001, E501
import lucid

# ---- added: the data and the loss the spec's training loop uses --------------------------
lucid.manual_seed(0)
true_param = lucid.tensor([1.25, 1.75, 3.25])
# 400 mini-batches of 16 inputs with 3 features; the target is input * true_param
data = [(x, x * true_param) for x in (lucid.randn(16, 3) for _ in range(400))]


def compute_loss(output, target):
    """Mean squared error."""
    return ((output - target) ** 2).mean()


# ---- the spec, verbatim -------------------------------------------------------------------
# fmt: off
import lucid.optim as optim
import lucid.nn as nn

# Define a simple model
class MyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.param = nn.Parameter([1.0, 2.0, 3.0])

    def forward(self, x):
        return x * self.param

# Initialize model and Adagrad optimizer
model = MyModel()
optimizer = optim.Adagrad(model.parameters(), lr=0.01, eps=1e-10, weight_decay=0.01, initial_accumulator_value=0.1)

# Training loop
for input, target in data:
    optimizer.zero_grad()
    output = model(input)
    loss = compute_loss(output, target)
    loss.backward()
    optimizer.step()

# Save state
optimizer_state = optimizer.state_dict()

# Load state
optimizer.load_state_dict(optimizer_state)
# fmt: on

# ---- added: what happened -------------------------------------------------------------------
print(f"learned param {model.param.tolist()} (data made with {true_param.tolist()};")
print("weight_decay=0.01 pulls it a little toward zero)")
print(f"final loss {loss.item():.4f}")
print(f"optimizer state per parameter: {sorted(optimizer_state['state'][0])}")
