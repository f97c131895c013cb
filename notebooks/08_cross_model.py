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
# # 08 · Every model beside its null; does 4-bit rounding change the answer?
#
# **What it shows.** Every model and its untrained twin on the same texts: the inner loss (Claim 1) and the norm statistics (Claim 2) side by side, with the paper's rows. It also measures how much 4-bit rounding moves those numbers, on a model whose full-precision weights we have.
#
# *Where its result is read:* [Findings, Claims 1-2](../docs/findings.md#claim-1) and [Can the 4-bit models be trusted?](../docs/findings.md#quantisation). Every table: [results/README.md](../results/README.md#notebook-08).
#
# Table 1 compares with chance, `2^-n`, but that is not the null. Residual streams grow by adding nearly
# orthogonal updates, so an **untrained** network of the same architecture already has mostly non-decreasing norms.
# Here every model runs on the **same texts with one token cap**, beside its **untrained twin**: the same
# architecture and config with the family's own seeded initialisation. For the project-trained GPT-2-architecture
# model (notebook 06), every checkpoint is used, from initialisation (its twin) to the last.
#
# * Columns: Table 1 at the paper's positions (>= 5) with 95% cluster-bootstrap CIs (texts are the clusters),
#   chance, the twin's value, and the inner loss (Eq. 14) at layer 0 and at the last layer. The inner loss is
#   given for the paper's filter (final loss <= 1) and for a seeded sample of all tokens. An untrained model has
#   no token with final loss <= 1.
# * **Quantisation check.** Every real model here (SmolLM2, Gemma, both Qwen models) exists only as a 4-bit GGUF
#   file, dequantised. We take a model whose fp32 weights we have (the project-trained one) and round its weights
#   with the files' two schemes: Q4_1 (SmolLM2's) and Q4_K_M (Gemma's and Qwen's). Then we compare its numbers on
#   the same tokens.
#
# The paper's rows (GPT-2, LLaMA-7B/13B; full texts, their own sample) stand beside ours. Hub models add a row
# through `extra_models` where the hub, or a local copy of it, is reachable.

# %% tags=["parameters"]
profile = "default"          # "smoke" (tests), "default" (make reproduce, 2-core CPU), "paper"
models = None                # None: the profile's (SmolLM2, Gemma-3-270M, "natural": notebook 06's model)
extra_models = []            # e.g. ["gpt2", "meta-llama/Llama-2-7b-hf"]: hub ids (local cache) or local folders
datasets = ["wikitext-103", "1bw"]
batch_tokens = 4096          # padded tokens per batch
device = "cpu"
data_dir = None              # None: $METALEARN_DATA, else the repo's data/
figures_dir = "figures"
results_dir = "results"
cache_dir = "results/cache"
filtered_dir = "data/filtered"

# %%
from helpers.validate import validate_params

globals().update(validate_params(globals()))

# %%
from IPython.display import Markdown, display

from helpers.config import get_profile
from helpers.experiments import crossmodel

settings = get_profile(profile)  # the profile, resolved once: the calls below take it
specs = list(models if models is not None else settings.cross.models) + list(extra_models)

# %% [markdown]
# ## Every model and its twin on the same texts, then the project-trained model's GGUF round trips

# %%
r = crossmodel.run(specs, datasets, settings, cache_dir, device, batch_tokens=batch_tokens, data_dir=data_dir,
                   filtered_dir=filtered_dir)
_, shown = crossmodel.report_table(r, results_dir)
display(r.timings)  # wall time per entry (its load included) and the run's peak resident memory so far
shown

# %%
figs, _ = crossmodel.report_figures(r, figures_dir)
for fig in figs:
    fig.show()

# %% [markdown]
# ## Against model size
#
# Each statistic against the parameter count (log axis): our models with their untrained twins at the same size,
# the paper's GPT-2 (1.5B as the paper names it), LLaMA-7B and LLaMA-13B as stars. Ours are 4-bit GGUF weights of
# instruction (Qwen: code-instruction) fine-tunes, the paper's are full-precision base models: a confounder of any
# trend read across the two groups.

# %%
figs, scale = crossmodel.report_scale(r, figures_dir)
for fig in figs:
    fig.show()
scale

# %% [markdown]
# ## The quantisation check: the project-trained model, fp32 against its GGUF round trips

# %%
_, flips = crossmodel.report_quantisation(r, results_dir)
flips

# %%
display(Markdown(crossmodel.reading(r.full, r.flips)))
