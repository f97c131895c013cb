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
# # 07 · Is each layer's update a descent step on the inner loss? Which sublayer moves the norm?
#
# **What it shows.** Whether each layer's and each half-step's update points downhill on the next-token loss: the share of descent directions for the Eq. 14 gradient and for the true loss's, with controls, the untrained twin and a line search over the step size. Part 1 also asks which sublayer moves the norm.
#
# *Where its result is read:* [Findings, Claim 1b](../docs/findings.md#claim-1b) (verdicts per third of the layers). Every table: [results/README.md](../results/README.md#notebook-07).
#
# Section 2 of the paper reads each attention and FFN sublayer with its residual connection as a (transformed)
# gradient step on the current token's representation `z_n`; the paper only shows that the inner loss (Eq. 14)
# falls across layers on average. The direct test (as Jastrzebski et al., ICLR 2018, did for ResNets): compare
# each update with `g`, the gradient of the Eq. 14 inner loss with respect to the state the update starts from
# (the prefix through the **last** block with the model's own mask and positions, final norm, LM head;
# cross-entropy with the true next token; only the current token's state varies).
#
# * **block** update `z^(l+1)_n - z^l_n` and **attention half-step** `z_mid - z^l_n` against `g(z^l_n)`;
#   **FFN half-step** `z^(l+1)_n - z_mid` against `g(z_mid)`, its own starting point.
# * Per layer: `cos(dz, -g)`, the share of **descent directions** (`<dz, g> < 0`), the share of steps that
#   **lower the inner loss** (Eq. 14 value after the step below the value before; undefined after the last block).
# * Baselines on the same tokens: **random directions of the same norm** (seeded) and the **untrained twin**
#   (same architecture and config, the family's own random initialisation). 50% and cos 0 mean 'unrelated to g'.
# * Where the norm moves: the norm after each half-step, which half-step produces the decreases, and the
#   per-layer growth rate beside the ~1.045 per layer published for GPT2-XL. Parallel-residual blocks
#   (GPT-NeoX/Pythia) have no half-step. One current token per text, at a random position >= 5.

# %% tags=["parameters"]
profile = "default"          # "smoke" (tests), "default" (make reproduce, 2-core CPU), "paper"
models = ["smollm2-135m", "gemma-3-270m", "natural"]  # "natural": notebook 06's GPT-2-architecture model
datasets = ["wikitext-103", "1bw"]
n_texts = None               # texts per dataset, one current token each; None: the profile's value (per model)
max_tokens = None            # tokens kept per text; None: the profile's value
powered_models = None        # part 2's models; None: the profile's (the four real models and "natural")
device = "cpu"
seed = 0
torch_threads = None         # None keeps torch's default (every core: part 2's LM-head calls run 1.7x faster on 2)
data_dir = None              # None: $METALEARN_DATA, else the repo's data/
figures_dir = "figures"
results_dir = "results"
cache_dir = "results/cache"
filtered_dir = "data/filtered"

# %%
from helpers.validate import validate_params

globals().update(validate_params(globals()))

# %%
import dataclasses

import torch
from IPython.display import Markdown, display

from helpers.config import get_profile
from helpers.corpus.samples import load_samples
from helpers.experiments import descent, descent_powered, descent_powered_report

if torch_threads:
    torch.set_num_threads(torch_threads)
prof = get_profile(profile).descent
prof = dataclasses.replace(prof, n_texts=n_texts or prof.n_texts, max_tokens=max_tokens or prof.max_tokens,
                           models=() if n_texts else prof.models)
texts = {ds: load_samples(ds, filtered_dir, data_dir) for ds in datasets}

# %% [markdown]
# ## Each model and its untrained twin, on the same tokens

# %%
run = descent.run_models(models, texts, prof, profile, seed, cache_dir, device)
run.timings

# %% [markdown]
# ## Descent test: share of descent steps by layer third, model vs untrained twin vs random directions

# %%
figs, thirds = descent.report_descent(run, profile, figures_dir, results_dir)
for fig in figs:
    fig.show()
thirds.round(2)

# %% [markdown]
# ## Where the norm moves: attention vs FFN half-steps

# %%
figs, attribution = descent.report_norms(run, profile, figures_dir, results_dir)
for fig in figs:
    fig.show()
attribution.round(3)

# %%
display(Markdown(descent.reading_of(run)))

# %% [markdown]
# ## Part 2 · The powered, two-sided test: two gradients, controls, and the line search
#
# Part 1 rests on one short-context token per text. Part 2 samples at least 400 tokens per model (several per
# WikiText-103 text at positions >= 128, one per 1BW sentence), keeps every token's context as the clean pass gave
# it, and asks three questions per (token, layer) update:
#
# * **Two gradients.** `inner`: the paper's Eq. 14 loss (last block + head, prefix held fixed). `true`: the
#   model's own next-token loss through the rest of the real network. A share of descent directions above 50%
#   (a direction unrelated to the gradient gives exactly 50%) with a Holm-adjusted two-sided p < 0.05 reads
#   "descends"; below, "ascends"; else "not distinguishable". The untrained twin on the same tokens is the second
#   null; the predictor layer L-1 is left out of the thirds.
# * **Controls.** The same test for a random wrong target and for the model's own final prediction: an update
#   that "descends" toward any target is not evidence of descending the language-modelling loss.
# * **The line search.** The update scaled by alpha in {0, 0.5, 1, 1.5, 2}, read (a) by the Eq. 14 predictor and
#   (b) by the rest of the network with the context cached. A layer is a "descent step" when removing its update
#   raises the loss and no other alpha does better. (b) favours alpha = 1 by co-adaptation of the later layers;
#   (a) is the sharper test of the paper's claim.

# %%
pprof = get_profile(profile).powered
run2 = descent_powered.run_models(list(powered_models or pprof.specs), texts, pprof, profile, seed, cache_dir, device)
run2.timings

# %%
figs, tables2 = descent_powered_report.report_powered(run2, profile, figures_dir, results_dir, pprof.n_boot)
for fig in figs:
    fig.show()
tables2["thirds"].query("weights == 'trained' and gradient in ['inner', 'true']").round(2)

# %%
tables2["line_thirds"].round(3)

# %%
display(Markdown(descent_powered_report.reading(tables2)))
