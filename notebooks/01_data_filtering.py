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
# # 01 · Data filtering
#
# **What it shows.** How many WikiText-103 and One Billion Word texts survive the paper's filters (Sec. 5.1), and how long they are in the model's tokens. The filtered samples it saves are the texts notebooks 02-05 read.
#
# *Where its result is read:* the table [`01_filter_counts`](../results/README.md#notebook-01) (counts before and after each rule). Every table: [results/README.md](../results/README.md#notebook-01).
#
# The paper (Sec. 5.1) evaluates on the **WikiText-103 test split** and the **One Billion Word (1BW) test set**,
# keeping texts of at least 10 words and drawing 5,000 random 1BW samples. This notebook applies those rules,
# reports counts before and after each rule, shows token-length histograms for the model, and saves the filtered
# samples (`data/filtered/*.jsonl`) that notebooks 02-05 read.
#
# Rules, stated plainly:
# - WikiText-103 (raw test file, one paragraph a line): blank lines and heading lines (` = Title = `, ` = = Section = = `) are skipped; paragraphs with fewer than 10 whitespace-separated words are dropped.
# - 1BW (held-out shard 0, the standard test set; one sentence a line): sentences with fewer than 10 words are dropped, then 5,000 are drawn at random with seed 0 (kept in corpus order).

# %% tags=["parameters"]
profile = "default"
model = "smollm2-135m"      # the tokenizer used for the length histograms
datasets = ["wikitext-103", "1bw"]
data_dir = None             # None: $METALEARN_DATA, else the repository's data/ (data/README.md), else the hub
min_words = 10
filter_seed = 0             # the seed of the 5,000-sentence 1BW draw (every notebook filters with 0)
figures_dir = "figures"
results_dir = "results"
filtered_dir = "data/filtered"  # cache of the filtered samples, relative to the repository root

# %%
from helpers.validate import validate_params

# every parameter checked before anything loads or is written: a bad one is a one-line error
globals().update(validate_params(globals()))

# %%
from IPython.display import Markdown, display

from helpers.experiments import corpus

# %% [markdown]
# The cache under `filtered_dir` is keyed by the corpus file (name relative to the data folder, sha256) and the
# rules: a different corpus or rule recomputes it.

# %%
r = corpus.run(datasets, model, filtered_dir, data_dir, min_words, filter_seed)
_, counts = corpus.report_counts(r, results_dir)
counts

# %%
fig, lengths = corpus.report_lengths(r, figures_dir)
fig

# %%
display(Markdown(corpus.reading(r)))

# %% [markdown]
# **Where the data come from.** The data are the verified copies
# shipped in the repository's `data/` folder; `data/README.md` lists each file's sha256, source and licence
# (WikiText: CC BY-SA 3.0, Merity et al.; 1BW: Apache-2.0, Chelba et al.). The `source` and `sha256` columns
# above name the file read (relative to the data folder) and the first 12 hex digits of its checksum.
