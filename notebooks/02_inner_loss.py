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
# # 02 · Inner-loss curves (Eq. 14, Fig. 2/4)
#
# **What it shows.** Whether the inner loss of Eq. 14 (the layer-l states through the last block, the final norm and the head) falls across layers, for the paper's filtered tokens and for all tokens, beside the untrained twin, a uniform guess (ln|V|) and the unigram entropy. The verdict is read on the interior layers, where the curve is not fixed by construction.
#
# *Where its result is read:* [Findings, Claim 1](../docs/findings.md#claim-1) (the rule and every model's verdict). Every table: [results/README.md](../results/README.md#notebook-02).
#
# The paper approximates the *inner* optimisation loss at layer *l* by feeding the layer-*l* residual states of the
# whole prefix through the **last block**, the final norm and the LM head, and taking the cross-entropy with the
# true next token (Eq. 14). At the last layer this is the model's own loss. Protocol: tokens at the 5th position
# or later whose final loss is <= 1; mean ± std per layer on a log axis. We also show every token (unfiltered)
# and the **logit lens** (final norm and head applied directly to layer *l*, no last block) beside it. The null is
# the model's **untrained twin** (same architecture, seeded random weights) through the same lenses, on notebook
# 08's shared sample, beside ln|V| (a uniform guess) and the sample's unigram entropy.

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

# %%
from helpers.validate import validate_params

# every parameter checked before anything loads or is written: a bad one is a one-line error
globals().update(validate_params(globals()))

# %%
from IPython.display import Markdown, display

from helpers.config import get_profile
from helpers.experiments import inner_loss as reports
from helpers.report import figures, output
from helpers.runs.datasets import analyse_corpora

settings = get_profile(profile)  # the profile, resolved once: the calls below take it
lm, runs = analyse_corpora(model, datasets, settings, device=device, dtype=dtype, device_map=device_map,
                           n_texts=n_texts, max_tokens=max_tokens, min_position=min_position, batch_size=batch_size,
                           batch_tokens=batch_tokens, lens_share=lens_share,
                           seed=seed, cache_dir=cache_dir, filtered_dir=filtered_dir, data_dir=data_dir, shard=shard)
tag = lm.name.replace("/", "_") + ("" if profile == "default" else f"_{profile}")  # file names say the profile

# %% [markdown]
# ## Per-layer loss, both lenses, both token filters

# %%
curves = reports.inner_loss_table(runs, lm.label)
output.save_table(curves, f"02_inner_loss_{tag}", results_dir,
                 caption=f"Per-layer loss over tokens: mean, std and the 10-90% quantiles. {lm.describe()}; profile {profile}; "
                         f"lens on {next(iter(runs.values())).lens_tokens}.")
curves.pivot_table(index="layer", columns=["dataset", "filter", "lens"], values="mean").round(3)

# %%
vocab_size = lm.lm_head.weight.shape[0]
summary = reports.inner_loss_summary(curves)
cal = reports.calibration_table(runs, vocab_size, settings.corpus.n_boot)
# the null: the untrained twin through the same lenses (notebook 08's sample and cache; frees the model's weights)
twin, twin_sample = reports.twin_curves(lm, datasets, settings, settings.cross.twin_seed, cache_dir=cache_dir,
                                        batch_tokens=batch_tokens, data_dir=data_dir, filtered_dir=filtered_dir)
for ds, run in runs.items():
    kept = summary.set_index("dataset").loc[ds, "share passing %"]
    unigram = cal.set_index("dataset").loc[ds].get("unigram_entropy")
    fig = figures.fig_inner_loss(curves, ds, f"Inner loss across layers, {ds}",
                               run.caption(f"positions >= {min_position + 1}; {kept:.1f}% of tokens have final loss <= 1; "
                                           f"lens on {run.lens_tokens}"), vocab_size=vocab_size,
                               unigram=unigram, twin=twin, twin_sample=twin_sample)
    output.save_figure(fig, f"02_inner_loss_{tag}_{ds}", figures_dir)
    fig.show()

# %% [markdown]
# ## First vs last layer, and what it means

# %%
output.save_table(summary, f"02_inner_loss_summary_{tag}", results_dir,
                 caption=f"Inner loss (Eq. 14), tokens with final loss <= 1: first vs last layer. {lm.describe()}; "
                         f"profile {profile}. Paper (Fig. 2/4): decreasing across layers for GPT-2, LLaMA-7B/13B.")
output.save_table(cal, f"02_inner_calibrated_{tag}", results_dir,
                 caption=f"Inner loss calibrated, sample of all tokens: medians and IQR, ln|V|, unigram entropy, the "
                         f"interior Kendall tau (layers 1..L-2) with a 95% cluster-bootstrap CI. {lm.describe()}; "
                         f"profile {profile}.")
display(summary)
display(cal.round(3))
display(Markdown(reports.reading_inner_loss(summary, curves, lm.describe(), cal, twin, twin_sample)))
