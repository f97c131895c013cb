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
# A PCA fitted on current-token representations at every layer (the last token of each sampled text, layers 0..L:
# inputs of every block and the last block's output before the final norm), then each token's trajectory across
# layers in the first three components: 50 samples for shallow models, 150 for deep ones (paper protocol). Beside
# it, the norm against layer for the same samples and the explained variance of the three components.

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
pca_samples = None          # None: the profile's value

# %%
import sys
from pathlib import Path

ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
sys.path.insert(0, str(ROOT))
import numpy as np
import plotly.graph_objects as go
from IPython.display import Markdown, display

from helpers import plots

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
from helpers.pca import fit_trajectories

n_pca = pca_samples or prof.corpus.pca_samples
for ds, run in runs.items():
    vec = run.records["last_vectors"][:n_pca]
    pca = fit_trajectories(vec)
    display(Markdown(f"**{ds}**: explained variance of PC1-3 = "
                     + ", ".join(f"{100 * v:.1f}%" for v in pca.explained_variance_ratio)))
    fig = plots.trajectory_figure(pca.coords, pca.explained_variance_ratio)
    plots.with_caption(fig, f"Current-token trajectories across layers (PCA), {ds}",
                       run.caption(f"last token of {len(vec)} texts; layers 0..{lm.n_layers}"))
    plots.save_figure(fig, f"04_pca_{tag}_{ds}", ROOT / figures_dir)
    fig.show()
    norms = np.linalg.norm(vec, axis=-1)
    fig2 = go.Figure([go.Scatter(x=list(range(norms.shape[1])), y=row, mode="lines", line=dict(width=1),
                                 opacity=0.5, showlegend=False) for row in norms])
    fig2.update_layout(xaxis_title="layer", yaxis_title="||z_l||", yaxis_type="log")
    plots.with_caption(fig2, f"Norm against layer for the same samples, {ds}", run.caption(f"last token of {len(vec)} texts"))
    plots.save_figure(fig2, f"04_pca_norms_{tag}_{ds}", ROOT / figures_dir)
    fig2.show()

# %% [markdown]
# **Reading.** In the paper the trajectories move outwards from a common start as the layer index grows, the
# picture of a norm that keeps increasing. The last point of each trajectory here is the last block's output, which
# in many models jumps far from the rest (its norm is not part of Table 1). Hover over a point to see its layer.
