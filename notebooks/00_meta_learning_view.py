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
# **What it shows.** A linear layer trained by plain SGD equals its initial weights minus the sum of outer products of output gradients and inputs (Eq. 1), to float precision, and applied to a new input it is linear attention over its own training history (the dual form). This identity is what the paper's meta-learning reading rests on; the later notebooks test what it is used to claim.
#
# *Where its result is read:* the table [`00_eq1_identity`](../results/README.md#notebook-00) (errors of both identities) and the guided reading at the end. Every table: [results/README.md](../results/README.md).
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
# numerically on a small linear layer trained with plain SGD (`helpers/experiments/eq1.py`), then walks through
# Sec. 2-3 of the paper with pointers to the notebooks that test each claim.

# %% tags=["parameters"]

profile = "default"  # "smoke" | "default" | "paper": the example is tiny in every profile
figures_dir = "figures"
results_dir = "results"
cache_dir = "results/cache"
device = "cpu"
seed = 0

# %%
from helpers.validate import validate_params

globals().update(validate_params(globals()))

# %%
from IPython.display import Markdown, display

from helpers.config import get_profile
from helpers.experiments import eq1
from helpers.report import figures_training, output

cfg = get_profile(profile).eq1
task = eq1.make_task(cfg, seed)

# %% [markdown]
# ## Eq. (1): rebuilding the trained matrix from its training record
#
# A linear layer $y = W x$ of shape `d_out x d_in` learns a classification task (the argmax of a random
# teacher) by `torch.optim.SGD`, one example per step, softmax cross-entropy, step size
# $\eta_t = 0.5/\sqrt{1+t}$, no weight decay. We record each input $x_t$ and the output gradient
# $\nabla_y\mathcal{L}_t$ (a hook on $y$), then rebuild $W_T$ from the record alone: in float64, in
# float32, and once with momentum 0.9, where the update is no longer the current gradient alone — the
# reason the paper states Eq. (1) for plain SGD. The reading below the table states what came out.

# %%
table, records = eq1.identity_table(task)
output.save_table(table, "00_eq1_identity", results_dir, caption=f"Eq. (1) on a {cfg.d_out}x{cfg.d_in} linear layer "
                 f"trained by SGD for {cfg.steps} steps (seed {seed}).")
table

# %% [markdown]
# ## The dual form: the trained layer is attention over its training history
#
# For new inputs $x$ we compare $W_T x$ with $W_0 x + \sum_t \text{value}_t\,\text{score}_t$. The
# right panel shows, for one new input, how much each past step contributes
# ($|\text{score}_t|\,\|\text{value}_t\|$): every training example is a 'historical instance' that the
# new input attends to, with a weight set by how similar it is to the new input.

# %%
check = eq1.dual_form_check(records["float64"], task.x_new)
cap = (f"linear layer {cfg.d_out}x{cfg.d_in}, {cfg.steps} SGD steps (float64), {cfg.n_new} new Gaussian inputs; "
       f"right: one new input; seed {seed}")
fig = figures_training.fig_eq1_dual_form(check["primal"], check["dual"], check["contributions"],
                              "Eq. (1): a trained linear layer as attention over its training history", cap)
output.save_figure(fig, "00_eq1_dual_form", figures_dir, caption=cap)
fig.show()
display(Markdown(eq1.reading(table, check)))

# %% [markdown]
# ## A guided reading of Sec. 2-3, and where each claim is tested
#
# 1. **Eq. (1)-(2): training is a sum over the history.** Checked above for one linear layer.
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
