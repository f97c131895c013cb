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
# # 09 · Conjecture 4.1 read honestly: what is learned and what is geometry
#
# **What it shows.** What in Claim 2 is learned and what is geometry: each step's non-decrease rate against a null that keeps the step's size and draws its direction at random, swap nulls and twins at several initialisation scales. Weight perturbations show how many verdicts rounding or noise can flip.
#
# *Where its result is read:* [Findings, Claim 2: what is learned and what is geometry](../docs/findings.md#claim-2-geometry). Every table: [results/README.md](../results/README.md#notebook-09).
#
# A step `z -> z + dz` keeps the norm from falling exactly when `cos(z, dz) >= -|dz| / (2|z|)`. So a non-decrease
# rate has two parts: how large the steps are against the stream (`r = |dz|/|z|`) and where they point. This
# notebook separates them on every model, with nulls built from the model's own numbers (README: "Findings").
#
# * **Direction-randomised null**: each step keeps its `|z|` and `|dz|`, and its direction is drawn uniformly. Then
#   `(1 + cos)/2 ~ Beta((d-1)/2, (d-1)/2)` gives the chance of a non-decreasing step exactly. The observed rate
#   minus this prediction (paired, on the same tokens, 95% cluster-bootstrap CI over texts) is what the *learned
#   directions* add (above) or take away (below).
# * **Swap nulls**: the token's own state with the update that another token got at the same step, from the same
#   text or from another text.
# * **Twins at several initialisation scales** (sigma 0.005, the library default 0.02 and the released config's
#   value), plus one with zero-initialised output projections, each beside its own closed-form prediction. A twin's
#   rate is set by its scale, so a twin is a null for a given scale only.
# * **Quantisation** (SmolLM2): a 4-bit rounding with another scheme (Q4_K_M), Gaussian noise of that rounding's
#   per-tensor size, and the file's own scheme again. Each counts the steps and verdicts it flips, beside the twin
#   rounded the same way.
#
# Steps are Table 1's: blocks 0..L-2 (the last block's output is left out, as in the paper), positions >= 5. The
# half-steps (attention, MLP) are recorded too.

# %% tags=["parameters"]
profile = "default"          # "smoke" (tests), "default" (make reproduce, 2-core CPU), "paper"
models = None                # None: the profile's (SmolLM2, Gemma-3-270M, Qwen2.5-Coder 0.5B/1.5B, "natural")
extra_models = []            # hub ids (local cache) or local folders
batch_tokens = 2048          # padded tokens per batch
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
from helpers.experiments import geometry

settings = get_profile(profile)  # the profile, resolved once: the calls below take it
specs = list(models if models is not None else settings.geometry.models) + list(extra_models)

# %% [markdown]
# ## Every model, its twins and its perturbed copies on one sample

# %%
r = geometry.run(specs, settings, cache_dir, device, data_dir=data_dir, filtered_dir=filtered_dir,
                 batch_tokens=batch_tokens)
tables = geometry.report(r, results_dir, figures_dir)
display(r.timings)  # wall time per model (load, twins, perturbed copies) and the run's peak resident memory so far
tables["rates"][["model", "role", "kind", "steps", "n_tokens", "pair_pct", "null_pair_pct", "vs_null_pair_pp",
                 "verdict_pair", "sequence_pct", "null_sequence_pct", "same_pair_pct", "other_pair_pct"]].round(2)

# %%
for fig in tables["figures"].values():
    fig.show()

# %% [markdown]
# ## Where the decreases come from, and what a weight perturbation flips

# %%
display(tables["sources"].round(2))
tables["flips"].round(3)

# %%
display(Markdown(geometry.reading(tables)))
