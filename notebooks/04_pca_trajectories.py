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
# # 04 · PCA trajectories (Fig. 3/5)
#
# **What it shows.** The current token's path across layers in the first three principal components (the paper's Fig. 3/5), with its norm against layer for the same tokens. It is a picture of Claim 2, not a test of it.
#
# *Where its result is read:* [Findings, Claim 2](../docs/findings.md#claim-2) (the tests of what these pictures show). Its figures: `figures/04_*`; it writes no table.
#
# A PCA fitted on current-token representations at every layer (the last token of each sampled text, layers
# 0..L-1: the inputs of every block, as in the paper's Sec. 5.3, which leaves the last layer out; set
# `include_last = True` to add the last block's output before the final norm), then each token's trajectory
# across layers in the first three components: 50 samples for shallow models, 150 for deep ones (paper protocol).
# Beside it, the norm against layer for the same samples and the explained variance of the three components.

# %% tags=["parameters"]
profile = "default"          # "smoke" (tests), "default" (make reproduce, 2-core CPU), "paper" (full protocol)
model = "smollm2-135m"       # registry name, hub id (e.g. "gpt2", "meta-llama/Llama-2-7b-hf"), local dir or .gguf
datasets = ["wikitext-103", "1bw"]
n_texts = None               # None: the profile's value
max_tokens = None            # None: the profile's value (paper: the model's context)
min_position = 4             # 0-based: tokens at the 5th position or later, as in the paper
batch_tokens = 4096          # padded tokens per batch (length-sorted); raise it on a GPU
batch_size = None            # max rows per batch; None: limited by batch_tokens only
lens_share = None            # lens on tokens with final loss at most 1 plus this random share of all tokens
                             # (None: the profile's, default 0.1, paper 0.02; "all": every token)
device = "cpu"
dtype = "float32"            # "bfloat16"/"float16" on GPUs; norms and losses are reduced in float32
device_map = None            # "auto" spreads a large model over several GPUs
seed = 0
shard = None                 # "i/n" runs a disjoint slice (docs/scaling.md: sharded runs)
data_dir = None              # None: $METALEARN_DATA, else the repo's data/ (see data/README.md)
figures_dir = "figures"
results_dir = "results"
cache_dir = "results/cache"
filtered_dir = "data/filtered"
pca_samples = None           # None: the profile's value
include_last = False         # True: also fit and draw layer L (the last block's output, before the final norm)

# %%
from helpers.validate import validate_params

# every parameter checked before anything loads or is written: a bad one is a one-line error
globals().update(validate_params(globals()))

# %%
from IPython.display import Markdown, display

from helpers.config import get_profile
from helpers.experiments import pca
from helpers.runs.datasets import analyse_corpora

settings = get_profile(profile)  # the profile, resolved once: the calls below take it
lm, runs = analyse_corpora(model, datasets, settings, device=device, dtype=dtype, device_map=device_map,
                           n_texts=n_texts, max_tokens=max_tokens, min_position=min_position, batch_size=batch_size,
                           batch_tokens=batch_tokens, lens_share=lens_share,
                           seed=seed, cache_dir=cache_dir, filtered_dir=filtered_dir, data_dir=data_dir, shard=shard)
tag = lm.name.replace("/", "_") + ("" if profile == "default" else f"_{profile}")  # file names say the profile

# %%
r = pca.run(runs, lm.n_layers, pca_samples or settings.corpus.pca_samples, include_last)
for ds in runs:
    fig, explained = pca.report_trajectories(r, ds, figures_dir, tag)
    fig.show()
    fig, norm_quartiles = pca.report_norms(r, ds, figures_dir, tag)
    fig.show()

# %%
display(Markdown(pca.reading(r)))
