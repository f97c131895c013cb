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
# # 03 · Norm statistics (Conjecture 4.1, Table 1)
#
# **What it shows.** How often the current token's norm never decreases across layers (sequence level) and how often single layer steps do not (pair level): the paper's Table 1 with bootstrap intervals, beside the paper's rows and the untrained twin. It also shows which layer steps break the pattern.
#
# *Where its result is read:* [Findings, Claim 2](../docs/findings.md#claim-2) (every model beside its twin). Every table: [results/README.md](../results/README.md#notebook-03).
#
# For every token, its trajectory of residual-stream norms over layers 0..L-1 (the input of every block; the last
# block's output is excluded, as in the paper). **Sequence level**: the share of trajectories that never decrease;
# **pair level**: the share of neighbouring-layer steps that do not decrease. Chance for *n* steps is 2^-n.
# Norms are reduced in float32. Confidence intervals: 95% bootstrap over texts (tokens of one text are not
# independent). Variants: the paper's positions >= 5, the last token of each text, and all positions with and
# without position 0 (which carries 'massive activations' in many models).
#
# Chance is not the right null: an **untrained twin** (same architecture and config, the family's own seeded
# initialisation) already grows its residual norms, because each block adds a nearly orthogonal update. Its row, on
# the same texts, shows what the architecture gives before any training (notebook 08 puts every model beside its twin).

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
twin = None                  # the untrained twin's Table 1 row (the null; norms only); None: the profile's (paper: off)
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
from helpers.experiments import table1 as reports
from helpers.experiments.paper import PAPER_TABLE1
from helpers.report import figures_norms, output
from helpers.runs.datasets import analyse_corpora, analyse_twin, corpora_caption
from helpers.stats.tokens import norm_trajectories

settings = get_profile(profile)  # the profile, resolved once: the calls below take it
lm, runs = analyse_corpora(model, datasets, settings, device=device, dtype=dtype, device_map=device_map,
                           n_texts=n_texts, max_tokens=max_tokens, min_position=min_position, batch_size=batch_size,
                           batch_tokens=batch_tokens, lens_share=lens_share,
                           seed=seed, cache_dir=cache_dir, filtered_dir=filtered_dir, data_dir=data_dir, shard=shard)
tag = lm.name.replace("/", "_") + ("" if profile == "default" else f"_{profile}")  # file names say the profile

# %% [markdown]
# ## Table 1 beside the paper's rows

# %%
twin_lm, twin_runs = None, {}
if settings.corpus.twin if twin is None else twin:  # same texts, same architecture, random initialisation
    twin_lm, twin_runs = analyse_twin(lm, runs, settings, max_tokens=max_tokens, min_position=min_position,
                                      batch_size=batch_size, batch_tokens=batch_tokens, seed=seed, cache_dir=cache_dir,
                                      filtered_dir=filtered_dir, data_dir=data_dir, shard=shard, release=True)
table = reports.table1_with_paper(runs, lm.n_layers, min_position, lm.label, n_boot=settings.corpus.n_boot, seed=seed,
                                  twins=twin_runs, twin_label=twin_lm.label if twin_lm else "")
output.save_table(table, f"03_table1_{tag}", results_dir,
                 caption=f"Table 1: non-decreasing norms over layers 0..L-1. {lm.describe()}; profile {profile}; "
                         + (f"'{reports.TWIN_VARIANT}': {twin_lm.describe()}, same texts; " if twin_lm else "")
                         + "paper rows are the published values (GPT-2, LLaMA-7B, LLaMA-13B).")
table.round(2)

# %% [markdown]
# ## Which layer steps break the pattern

# %%
trans = reports.transitions_table(runs, lm.n_layers, min_position)
output.save_table(trans, f"03_transitions_{tag}", results_dir,
                 caption=f"Share of tokens whose norm does not decrease at each layer step. {lm.describe()}.")
where = corpora_caption(runs, f"positions >= {min_position + 1}")
twin_trans = reports.transitions_table(twin_runs, lm.n_layers, min_position) if twin_runs else None
fig = figures_norms.fig_transitions(trans, "Which layer steps break the non-decreasing pattern", where, twin=twin_trans,
                              paper=PAPER_TABLE1[PAPER_TABLE1.dataset.isin(list(runs))])
output.save_figure(fig, f"03_transitions_{tag}", figures_dir)
fig

# %%
def block_inputs(run):  # norms of the current token at the inputs of blocks 0..L-1, positions >= min_position
    return norm_trajectories(run.records, lm.n_layers)[run.records["position"] >= min_position]


fig = figures_norms.fig_norm_quantiles({ds: block_inputs(r) for ds, r in runs.items()},
                                 "Residual norm of the current token across layers", where,
                                 twin={ds: block_inputs(r) for ds, r in twin_runs.items()})
output.save_figure(fig, f"03_norms_by_layer_{tag}", figures_dir)
fig

# %%
display(Markdown(reports.reading_table1(table, trans, min_position, lm.describe())))
