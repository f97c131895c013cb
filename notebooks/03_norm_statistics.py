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
# For every token, its trajectory of residual-stream norms over layers 0..L-1 (the input of every block; the last
# block's output is excluded, as in the paper). **Sequence level**: the share of trajectories that never decrease;
# **pair level**: the share of neighbouring-layer steps that do not decrease. Chance for *n* steps is 2^-n.
# Norms are reduced in float32. Confidence intervals: 95% bootstrap over texts (tokens of one text are not
# independent). Variants: the paper's positions >= 5, the last token of each text, and all positions with and
# without position 0 (which carries 'massive activations' in many models).

# %% tags=["parameters"]
profile = "default"          # "smoke" (tests), "default" (make reproduce, 2-core CPU), "paper" (full protocol)
model = "smollm2-135m"       # registry name, hub id (e.g. "gpt2", "meta-llama/Llama-2-7b-hf"), local dir or .gguf
datasets = ["wikitext-103", "1bw"]
n_texts = None               # None: the profile's value
max_tokens = None            # None: the profile's value (paper: the model's context)
min_position = 4             # 0-based: tokens at the 5th position or later, as in the paper
batch_size = 8
device = "cpu"
dtype = "float32"            # "bfloat16"/"float16" on GPUs; norms and losses are reduced in float32
device_map = None            # "auto" spreads a large model over several GPUs
seed = 0
shard = None                 # "i/n" runs a disjoint slice (see README: sharded runs)
data_dir = None              # None: $METALEARN_DATA, else the Hugging Face hub
figures_dir = "figures"
results_dir = "results"
cache_dir = "results/cache"
filtered_dir = "data/filtered"

# %%
import sys
from pathlib import Path

ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
sys.path.insert(0, str(ROOT))
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from helpers import plots, reports

# %%
from helpers.models import load_model
from helpers.pipeline import analyse_dataset
from helpers.profiles import get_profile

prof = get_profile(profile)
lm = load_model(model, device=device, dtype=dtype, device_map=device_map)
tag = lm.name.replace("/", "_")
print(lm.describe())
runs = {
    ds: analyse_dataset(lm, ds, profile=profile, n_texts=n_texts, max_tokens=max_tokens, min_position=min_position,
                        batch_size=batch_size, seed=seed, cache_dir=cache_dir, filtered_dir=filtered_dir,
                        data_dir=data_dir, shard=shard)
    for ds in datasets
}

# %%
ours = pd.concat([reports.table1(run.records, lm.n_layers, min_position, lm.label, ds, n_boot=prof.corpus.n_boot, seed=seed)
                  for ds, run in runs.items()], ignore_index=True)
table = pd.concat([reports.with_paper_values(ours[ours.dataset == ds], ds) for ds in runs], ignore_index=True)
plots.save_table(table, f"03_table1_{tag}", ROOT / results_dir,
                 caption=f"Table 1: non-decreasing norms over layers 0..L-1. {lm.describe()}; profile {profile}; "
                         f"paper rows are the published values (GPT-2, LLaMA-7B, LLaMA-13B).")
table.round(2)

# %%
trans = pd.concat([reports.transitions(run.records, lm.n_layers, min_position).assign(dataset=ds)
                   for ds, run in runs.items()], ignore_index=True)
plots.save_table(trans, f"03_transitions_{tag}", ROOT / results_dir,
                 caption=f"Share of tokens whose norm does not decrease at each layer step. {lm.describe()}.")
fig = go.Figure([go.Bar(x=t.step, y=t.non_decreasing_pct, name=ds) for ds, t in trans.groupby("dataset")])
fig.update_layout(xaxis_title="layer step", yaxis_title="% of tokens non-decreasing", barmode="group")
run0 = next(iter(runs.values()))
plots.with_caption(fig, "Which layer steps break the non-decreasing pattern",
                   " / ".join(r.caption(f"positions >= {min_position + 1}") for r in runs.values()))
plots.save_figure(fig, f"03_transitions_{tag}", ROOT / figures_dir)
fig

# %%
fig = go.Figure()
for ds, run in runs.items():
    mask = run.records["position"] >= min_position
    traj = run.records["norms"][mask][:, : lm.n_layers]
    fig.add_trace(go.Scatter(x=list(range(lm.n_layers)), y=np.median(traj, 0), mode="lines+markers", name=f"{ds} median",
                             error_y=dict(type="data", symmetric=False, array=np.percentile(traj, 90, 0) - np.median(traj, 0),
                                          arrayminus=np.median(traj, 0) - np.percentile(traj, 10, 0))))
fig.update_layout(xaxis_title="layer l (input of block l)", yaxis_title="||z_l|| (median, 10-90%)")
plots.with_caption(fig, "Residual norm of the current token across layers",
                   " / ".join(r.caption(f"positions >= {min_position + 1}") for r in runs.values()))
plots.save_figure(fig, f"03_norms_by_layer_{tag}", ROOT / figures_dir)
fig

# %% [markdown]
# **Reading.** Compare the sequence- and pair-level rates with the paper's rows and with chance (2^-n). The pair
# level is what the conjecture predicts step by step; the sequence level is much stricter for a deep model (29
# steps for SmolLM2's 30 layers against 11 for GPT-2), so a lower sequence rate on a deeper model is expected even
# if every step has the same probability. The transition plot shows which layer steps break the pattern.
