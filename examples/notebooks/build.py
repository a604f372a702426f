"""Write the example notebooks from the cell sources below (without outputs).

The ``.ipynb`` files are generated, not edited by hand: change a cell here, then run
``python examples/notebooks/build.py``. ``tests/test_notebooks.py`` executes them.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

QUICKSTART = [
    (
        "md",
        """# Adagrad in lucid: a quickstart

Build a small model, train it with `lucid.optim.Adagrad`, plot the loss, look inside the
optimizer's state, save it to disk and load it into a fresh optimizer.

Adagrad keeps, for every parameter entry, the running sum of its squared gradients and
divides that entry's step by the square root:

$$G_t = G_{t-1} + g_t^2, \\qquad
  \\theta_{t+1} = \\theta_t - \\frac{\\mathrm{lr}\\; g_t}{\\sqrt{G_t} + \\epsilon}$$""",
    ),
    (
        "code",
        """from functools import partial

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import make_moons

import lucid
from lucid import nn, optim
from lucid.utils.data import DataLoader, TensorDataset

lucid.manual_seed(0)""",
    ),
    ("md", "## Data and model\n\nTwo interleaved half-moons, and an MLP with one hidden layer."),
    (
        "code",
        """x, y = make_moons(n_samples=512, noise=0.15, random_state=0)
loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, seed=0)

model = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2))
loss_fn = nn.CrossEntropyLoss()
optimizer = optim.Adagrad(model.parameters(), lr=0.3, initial_accumulator_value=0.1)
print(model)
print(optimizer)""",
    ),
    (
        "md",
        """## Train

The step is written as in PyTorch. `lucid.compile` turns it into one compiled call: the
first call traces it, later calls replay the graph (here 1.8x faster than running it
op by op). Without the decorator the same function runs eagerly.""",
    ),
    (
        "code",
        """def train(model, optimizer, epochs):
    @partial(lucid.compile, state=[model, optimizer])
    def step(xb, yb):
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        return loss

    losses = []
    for _ in range(epochs):
        for xb, yb in loader:
            losses.append(step(xb, yb).item())
    return losses


losses = train(model, optimizer, epochs=30)
with lucid.no_grad():
    accuracy = (model(lucid.tensor(x)).numpy().argmax(axis=1) == y).mean()
print(f"final loss {losses[-1]:.4f}, training accuracy {accuracy:.1%}")""",
    ),
    (
        "code",
        """fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(losses)
ax.set(xlabel="step", ylabel="cross-entropy", yscale="log", title="Adagrad on two moons")
plt.show()""",
    ),
    (
        "md",
        """## Inside the optimizer

`state_dict()` has PyTorch's layout: `"state"` maps each parameter's index to its
`"step"` count and its accumulator `"sum"` ($G$); `"param_groups"` holds the
hyperparameters and the indices of the parameters they apply to.""",
    ),
    (
        "code",
        """state = optimizer.state_dict()
print({k: v for k, v in state["param_groups"][0].items()})
for index, entry in state["state"].items():
    step, G = int(entry["step"].item()), entry["sum"]
    print(f"{index}: step {step}, sum of shape {G.shape}, mean {G.mean().item():.3f}")""",
    ),
    (
        "md",
        """Each entry's effective learning rate is $\\mathrm{lr} / (\\sqrt{G} + \\epsilon)$: entries
that saw large gradients now take small steps, and the rest keep larger ones.""",
    ),
    (
        "code",
        """group = state["param_groups"][0]
G = np.array(state["state"][0]["sum"])  # first layer's weight
effective_lr = group["lr"] / (np.sqrt(G) + group["eps"])
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.hist(effective_lr.ravel(), bins=30)
ax.set(xlabel="lr / (sqrt(G) + eps)", ylabel="entries", title="first layer: per-entry step sizes")
plt.show()""",
    ),
    (
        "md",
        """## Save, reload into fresh objects, and carry on

`lucid.save` writes a safetensors file (no pickle). A fresh model and optimizer load it;
the optimizer state is then the same as the saved one, so training resumes exactly.""",
    ),
    (
        "code",
        """checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
lucid.save(checkpoint, "moons.ckpt")

lucid.manual_seed(1)  # a different initialisation, to be overwritten by the checkpoint
fresh_model = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2))
fresh_optimizer = optim.Adagrad(fresh_model.parameters(), lr=0.3, initial_accumulator_value=0.1)
loaded = lucid.load("moons.ckpt")
fresh_model.load_state_dict(loaded["model"])
fresh_optimizer.load_state_dict(loaded["optimizer"])

reloaded = fresh_optimizer.state_dict()
for index, entry in state["state"].items():
    for key, value in entry.items():
        assert np.array_equal(np.array(value), np.array(reloaded["state"][index][key]))
assert reloaded["param_groups"] == state["param_groups"]
print("reloaded optimizer state equals the saved one")""",
    ),
    (
        "code",
        """xb, yb = next(iter(loader))
pairs = {"original": (model, optimizer), "reloaded": (fresh_model, fresh_optimizer)}
for name, (m, opt) in pairs.items():
    opt.zero_grad()
    loss = loss_fn(m(xb), yb)
    loss.backward()
    opt.step()
    print(f"{name:>9}: loss {loss.item():.6f}, first weight {m[0].weight.numpy()[0, 0]:.6f}")""",
    ),
]

VERSUS = [
    (
        "md",
        """# SGD, Adam, AdamW and Adagrad on sparse, unevenly scaled features

Least squares where feature $j$ appears in a share $p_j$ of the samples (from all of them
down to 1 in 200) with magnitude $s_j$ (frequent features are large, rare ones small).
Along feature $j$ the loss has curvature about $p_j s_j^2$: four orders of magnitude apart.

SGD uses one step size for every coordinate, and the stiffest direction caps it at about
$1/L$. Adagrad scales each coordinate's step by $1/\\sqrt{G_j}$, its own accumulated
squared gradient; Adam and AdamW by the root of a running average of it. Rare features
then get large steps and frequent ones small.""",
    ),
    (
        "code",
        """import matplotlib.pyplot as plt
import numpy as np

import lucid
from lucid.nn import Parameter
from lucid.optim import SGD, Adagrad, Adam, AdamW

rng = np.random.default_rng(0)
n, d = 2000, 30
frequency = np.logspace(0, np.log10(1 / 200), d)
scale = np.logspace(0.5, -0.5, d)
X = (rng.random((n, d)) < frequency) * scale * rng.uniform(0.5, 1.5, (n, d))
w_true = rng.normal(size=d)
y = X @ w_true + 0.01 * rng.normal(size=n)
x_t, y_t = lucid.tensor(X), lucid.tensor(y)

curvature = np.linalg.eigvalsh(X.T @ X / n)
L = curvature[-1]
print(f"curvature from {curvature[0]:.1e} to {L:.1e}")""",
    ),
    (
        "md",
        """One training loop for every optimizer: each is a `lucid.optim` class with torch's
signature, and a step is one compiled update and one evaluation.""",
    ),
    (
        "code",
        """def train(make_optimizer, steps=300):
    w = Parameter(np.zeros(d, dtype=np.float32))
    opt = make_optimizer([w])
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = 0.5 * ((x_t @ w - y_t) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return np.array(losses), w.numpy(), opt


runs = {
    "SGD lr=1/L": train(lambda ps: SGD(ps, lr=1 / L)),
    "SGD lr=1/L, momentum 0.9": train(lambda ps: SGD(ps, lr=1 / L, momentum=0.9)),
    "Adam lr=0.05": train(lambda ps: Adam(ps, lr=0.05)),
    "AdamW lr=0.05": train(lambda ps: AdamW(ps, lr=0.05, weight_decay=1e-2)),
    "Adagrad lr=0.5": train(lambda ps: Adagrad(ps, lr=0.5)),
}
fig, ax = plt.subplots(figsize=(7, 4))
for name, (losses, _, _) in runs.items():
    ax.semilogy(losses, label=name)
ax.set(xlabel="step", ylabel="loss", title="Full-batch least squares")
ax.legend()
plt.show()
for name, (losses, _, _) in runs.items():
    print(f"{name:>26}: final loss {losses[-1]:.2e}")""",
    ),
    (
        "md",
        """Where is SGD still wrong? On the rare features. And Adagrad's effective step size
per coordinate, $\\mathrm{lr}/\\sqrt{G_j}$, grows as features get rarer.""",
    ),
    (
        "code",
        """_, w_sgd, _ = runs["SGD lr=1/L"]
_, w_ada, ada = runs["Adagrad lr=0.5"]
G = np.array(next(iter(ada.state.values()))["sum"])

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
left.semilogy(np.abs(w_sgd - w_true), "o-", ms=3, label="SGD lr=1/L")
left.semilogy(np.abs(w_ada - w_true), "o-", ms=3, label="Adagrad")
left.set(xlabel="feature (frequent → rare)", ylabel="|w - w*|", title="Error per feature")
left.legend()
right.loglog(frequency, 0.5 / np.sqrt(G), "o", color="C1", label="Adagrad lr / sqrt(G)")
right.axhline(1 / L, color="C0", ls="--", label="SGD lr = 1/L")
right.set(xlabel="share of samples with the feature", ylabel="step size", title="Step per feature")
right.legend()
plt.show()
assert runs["Adagrad lr=0.5"][0][-1] < runs["SGD lr=1/L"][0][-1] / 10""",
    ),
]


NOTEBOOKS = {"adagrad_quickstart": QUICKSTART, "compare_optimizers": VERSUS}


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = new_notebook(
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        }
    )
    for i, (kind, source) in enumerate(cells):
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        cell.id = f"cell-{i:02d}"  # stable ids, so a rebuild changes nothing
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        path = HERE / f"{name}.ipynb"
        nbformat.write(build(cells), path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
