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
# **What it shows.** Whether each layer's and each half-step's update points downhill on the next-token loss: the share of descent directions for the Eq. 14 gradient and for the true loss's at the start of the step (and, as a step-size test, at its end), with controls, the untrained twin, a line search over the step size, and an ablation of the update's gradient component. Part 1 also asks which sublayer moves the norm.
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
from helpers.experiments import descent, descent_slopes, descent_slopes_report

if torch_threads:
    torch.set_num_threads(torch_threads)
settings = get_profile(profile)  # the profile, resolved once: the calls below take it
prof = settings.descent
prof = dataclasses.replace(prof, n_texts=n_texts or prof.n_texts, max_tokens=max_tokens or prof.max_tokens,
                           models=() if n_texts else prof.models)
texts = {ds: load_samples(ds, filtered_dir, data_dir) for ds in datasets}

# %% [markdown]
# ## Each model and its untrained twin, on the same tokens

# %%
run = descent.run_models(models, texts, prof, settings, seed, cache_dir, device)
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
# ## Part 2 · The powered, two-sided test: three slopes, controls, the line search and the ablation
#
# Part 1 rests on one short-context token per text. Part 2 samples about 400 tokens per model (up to 4 per
# WikiText-103 text at positions >= 128, one per 1BW sentence), keeps every token's context as the clean pass gave
# it, and writes `phi(alpha)` for the loss when a layer's update `dz` is scaled by `alpha`:
#
# * **Three slopes** `<g, dz>`. `inner`: the gradient of the paper's Eq. 14 loss (last block + head, prefix held
#   fixed) at the step's start, `phi_a'(0)`. `true`: the gradient of the model's own loss through the rest of the
#   real network at the step's start, `phi_b'(0)`: the descent test (on the subset below). `true_end`: the same
#   loss at the step's end, `phi_b'(1)`, about 0 when the step size is tuned: a step-size test, not a descent test
#   (earlier versions used a gradient at this end and read it as a descent test). A share of descent directions
#   (`<dz, g> < 0`; an unrelated direction gives 50%) reads "descends" when its family-adjusted interval lies above
#   50%, at least 3 pp above, and above the untrained twin's on the same tokens; "ascends" the mirror image; else
#   "not distinguishable" with the reason. The predictor layer L-1 is left out of the thirds.
# * **Controls.** The same slopes for a random wrong target and for the model's own final prediction: an update
#   that "descends" toward any target is not evidence of descending the language-modelling loss.
# * **The line search** on a subset stratified by corpus (one token from each of 30 WikiText-103 texts and 30 1BW
#   sentences; the two Qwen models at every other layer): `alpha` in {-1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4}, read (a)
#   by the Eq. 14 predictor and (b) by the rest of the network with the context cached; the minimiser `alpha*` of
#   each layer's mean curve with a cluster-bootstrap interval. (b) favours `alpha = 1` by co-adaptation of the later
#   layers; (a) is the sharper test of the paper's claim.
# * **The ablation**, the causal test: remove from each update its component along `-g`, a random component of the
#   same norm, or everything but the gradient component, and read the loss change. If the updates are gradient
#   steps, the gradient part does the work: removing it costs more than removing a random part.
#
# The untrained twin gets the slopes and the predictor's readings (a); reading (b) of the line search and the
# ablation passes the rest of the network once per variant, layer and token, and is run on the trained models.

# %%
pprof = settings.powered
run2 = descent_slopes.run_models(list(powered_models or pprof.specs), texts, pprof, settings, seed, cache_dir, device)
run2.timings

# %%
figs, tables2 = descent_slopes_report.report_powered(run2, profile, figures_dir, results_dir, pprof.n_boot)
for fig in figs:
    fig.show()
tables2["thirds"].query("weights == 'trained' and gradient in ['inner', 'true', 'true_end']").round(2)

# %%
tables2["line_thirds"].round(3)

# %%
tables2["ablation"].query("weights == 'trained' and step == 'block' and component == 'gradient'").round(3)

# %%
display(Markdown(descent_slopes_report.reading(tables2)))
