# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · The meta-learning view in one small, exact example
#
# Wu & Varshney build on one identity (their Eq. 1): a weight matrix trained by stochastic gradient
# descent is its initial value minus a sum of outer products of output gradients and inputs,
#
# $$W_T \;=\; W_0 \;-\; \sum_{t=1}^{T} \eta_t\, \nabla_{y}\mathcal{L}_t \otimes x_t ,$$
#
# because for a linear map $y = W x$ the gradient of the loss with respect to $W$ is exactly
# $\nabla_y \mathcal{L}\, x^\top$. Applying the trained matrix to a new input $x$ then reads as
# attention over the training history — the *dual form*:
#
# $$W_T\, x \;=\; W_0\, x \;+\; \sum_t \underbrace{(-\eta_t \nabla_y\mathcal{L}_t)}_{\text{value}_t}\;
# \underbrace{(x_t^\top x)}_{\text{score}_t} ,$$
#
# a linear (unnormalised) attention whose keys are the past inputs, whose query is the new input and
# whose values are the scaled negative output gradients. This notebook checks both statements
# numerically on a small linear layer trained with plain SGD, then walks through Sec. 2-3 of the paper
# with pointers to the notebooks that test each claim.

# %% tags=["parameters"]

profile = "default"  # "smoke" | "default" | "paper": the example is tiny in every profile
figures_dir = "figures"
results_dir = "results"
cache_dir = "results/cache"
device = "cpu"
seed = 0


# %%
import sys
from pathlib import Path

ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
sys.path.insert(0, str(ROOT))

# %%
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from helpers.dynamics import dual_form, outer_product_weights, train_linear_sgd
from helpers.plots import save_figure, save_table, with_caption
from helpers.profiles import get_profile

eq1 = get_profile(profile).eq1
d_in, d_out, steps, n_new = eq1.d_in, eq1.d_out, eq1.steps, eq1.n_new
rng = np.random.default_rng(seed)
teacher = rng.standard_normal((d_out, d_in))
xs = rng.standard_normal((steps, d_in))
targets = np.argmax(xs @ teacher.T, axis=1)  # a learnable classification task
w0 = 0.1 * rng.standard_normal((d_out, d_in))
lrs = 0.5 / np.sqrt(1 + np.arange(steps))  # a decaying step size eta_t
print(f"linear layer y = W x with W of shape {d_out} x {d_in}; {steps} SGD steps, one example each, "
      "softmax cross-entropy loss, no momentum, no weight decay")

# %% [markdown]
# ## Eq. (1) holds to floating-point precision
#
# We train with `torch.optim.SGD`, recording each input $x_t$ and the output gradient
# $\nabla_y\mathcal{L}_t$ (a hook on $y$), then rebuild $W_T$ from the record alone. In float64 the
# rebuilt matrix agrees to about $10^{-16}$ relative, in float32 to about $10^{-7}$: rounding, nothing
# else. With momentum the plain sum no longer reproduces $W_T$ (the update is no longer the current
# gradient alone), which is why the paper's Eq. (1) is stated for SGD.

# %%
rows = []
records = {}
for name, dtype, momentum in (("float64", torch.float64, 0.0), ("float32", torch.float32, 0.0),
                              ("float64, SGD with momentum 0.9", torch.float64, 0.9)):
    rec = train_linear_sgd(w0, xs, targets, lrs, dtype=dtype, momentum=momentum)
    rebuilt = outer_product_weights(rec.w0, rec.xs, rec.grads, rec.lrs)
    moved = np.abs(rec.w_final - rec.w0).max()
    err = np.abs(rebuilt - rec.w_final).max()
    rows.append({"training": name, "max |W_T - W_0|": moved, "max |W_T - rebuilt|": err,
                 "relative error": err / np.abs(rec.w_final).max(),
                 "machine epsilon": float(np.finfo(rec.xs.dtype).eps),
                 "first-10 loss": rec.losses[:10].mean(), "last-10 loss": rec.losses[-10:].mean()})
    records[name] = rec
eq1 = pd.DataFrame(rows)
save_table(eq1, "00_eq1_identity", results_dir,
           caption=f"Eq. (1) on a {d_out}x{d_in} linear layer trained by SGD for {steps} steps (seed {seed}).")
eq1

# %% [markdown]
# ## The dual form: the trained layer is attention over its training history
#
# For new inputs $x$ we compare $W_T x$ with $W_0 x + \sum_t \text{value}_t\,\text{score}_t$. The
# right panel shows, for one new input, how much each past step contributes
# ($|\text{score}_t|\,\|\text{value}_t\|$): every training example is a 'historical instance' that the
# new input attends to, with a weight set by how similar it is to the new input.

# %%
rec = records["float64"]
x_new = rng.standard_normal((n_new, d_in))
primal = x_new @ rec.w_final.T
dual = np.stack([dual_form(rec.w0, rec.xs, rec.grads, rec.lrs, x)["output"] for x in x_new])
print(f"max |W_T x - dual form| over {n_new} new inputs: {np.abs(primal - dual).max():.2e} "
      f"(outputs of size up to {np.abs(primal).max():.2f})")
one = dual_form(rec.w0, rec.xs, rec.grads, rec.lrs, x_new[0])
contrib = np.abs(one["scores"]) * np.linalg.norm(one["values"], axis=1)

fig = make_subplots(rows=1, cols=2, subplot_titles=("primal W_T x vs dual form", "contribution of each past step"))
fig.add_trace(go.Scatter(x=primal.ravel(), y=dual.ravel(), mode="markers", name="outputs"), row=1, col=1)
lim = [primal.min(), primal.max()]
fig.add_trace(go.Scatter(x=lim, y=lim, mode="lines", line={"dash": "dash", "color": "grey"}, name="y = x"),
              row=1, col=1)
fig.add_trace(go.Bar(x=np.arange(steps), y=contrib, name="|score_t| * ||value_t||"), row=1, col=2)
fig.update_xaxes(title_text="W_T x (primal)", row=1, col=1)
fig.update_yaxes(title_text="W_0 x + sum_t value_t score_t (dual)", row=1, col=1)
fig.update_xaxes(title_text="training step t", row=1, col=2)
cap = (f"linear layer {d_out}x{d_in}, {steps} SGD steps (float64), {n_new} new Gaussian inputs; "
       f"right: one new input; seed {seed}")
with_caption(fig, "Eq. (1): a trained linear layer as attention over its training history", cap)
save_figure(fig, "00_eq1_dual_form", figures_dir, caption=cap)
fig.show()

# %% [markdown]
# ## A guided reading of Sec. 2-3, and where each claim is tested
#
# 1. **Eq. (1)-(2): training is a sum over the history.** Shown exactly above for one linear layer.
#    In a Transformer the same algebra makes each weight matrix a (transformed) record of the
#    gradients it has seen — the *outer* optimisation, done once by training.
# 2. **Sec. 2: the forward pass as an inner optimisation.** Read each attention sub-layer and each
#    FFN sub-layer with its residual connection as an update $z \leftarrow z + \Delta z$ of the current
#    token's representation $z_n$, driven by the context: a (transformed) gradient step on a causal
#    language-modelling objective. The *inner* optimisation runs across layers, on every forward pass.
#    The dual form above is the bridge: attention over the context plays the role of the sum over
#    training examples.
# 3. **Eq. (14): measuring the inner loss.** If layers are optimisation steps, a loss should go down
#    across them. The paper feeds the layer-$l$ states through the *last* block, the final norm and the
#    LM head, and scores the true next token. → **notebook 02** (inner loss across layers, Fig. 2/4),
#    on texts prepared in **notebook 01** (data filtering: texts of at least 10 words, 5,000 1BW samples).
# 4. **Conjecture 4.1, Table 1: norms grow.** Gradient-descent-like updates that keep adding
#    information suggest that the current token's norm is non-decreasing over layers 0..L-1.
#    → **notebook 03** (sequence- and pair-level statistics against the paper's Table 1).
# 5. **Fig. 3/5: trajectories.** The residual trajectories of current tokens in a 3-D PCA, to see the
#    'optimisation path'. → **notebook 04** (PCA trajectories).
# 6. **Eq. (10)-(12), Proposition 1, Table 2: why norms grow.** A linear surrogate of a block,
#    $W = (I + W_{FFN})(I + W_{MHSA})$, and an eigenvalue condition under which $\|Wx\| \ge \|x\|$.
#    → **notebook 05** (eigenvalue check), including a small GPT-2-architecture model trained here.
# 7. **v2: watching the inner optimisation form during training.** Clustering of hidden states by task
#    and next token, inner versus outer losses over epochs, attention from an unseen instance to the
#    historical ones. → **notebook 06** (training dynamics; a documented reconstruction).
