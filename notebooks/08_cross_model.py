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
# * **Quantisation check.** SmolLM2 and Gemma exist here only as 4-bit GGUF files, dequantised. We take a model
#   whose fp32 weights we have (the project-trained one) and round its weights with the two files' schemes:
#   Q4_1 (SmolLM2's) and Q4_K_M (Gemma's). Then we compare its numbers on the same tokens.
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
import pandas as pd
from IPython.display import Markdown, display

from helpers import CompendiumError
from helpers.config import get_profile
from helpers.experiments import crossmodel, zoo
from helpers.report import figures, output

cross = get_profile(profile).cross
specs = list(models if models is not None else cross.models) + list(extra_models)
suffix = "" if profile == "default" else f"_{profile}"
opts = dict(cache_dir=cache_dir, batch_tokens=batch_tokens, data_dir=data_dir, filtered_dir=filtered_dir)
sample = (f"the same texts for every model: {cross.wikitext_texts} WikiText-103 test paragraphs and "
          f"{cross.onebw_texts} 1BW test sentences (seeded sample after the paper's filtering), first "
          f"{cross.max_tokens} tokens of each, tokens at positions >= 5; profile {profile}")

# %% [markdown]
# ## Every model and its twin on the same texts

# %%
rows, runs_of, natural_last = [], {}, None
for spec in specs:
    for entry in zoo.model_entries(spec, profile, cache_dir, twin_seed=cross.twin_seed, device=device):
        runs = crossmodel.analyse_entry(entry, datasets, profile, **opts)
        rows += [crossmodel.entry_row(entry, run, n_boot=cross.n_boot) for run in runs.values()]
        runs_of[crossmodel.entry_key(entry.group, entry.role, entry.epoch)] = runs
        if entry.group == "natural":
            natural_last = (entry, runs)  # checkpoints come in epoch order: the last one stays
if not rows:
    raise CompendiumError(f"none of the models {specs} could be loaded (see the notes above): install them "
                          "(make gemma), train the natural-text model (notebook 06) or name models that exist here")

# %% [markdown]
# ## The quantisation check: the project-trained model, fp32 against its GGUF round trips

# %%
from helpers.lm.quantise import quantised_twin

flips, tensor_tables = [], []
if natural_last is not None:
    base_entry, base_runs = natural_last
    for scheme in cross.schemes:
        q_lm = quantised_twin(base_entry.lm, scheme)
        q_entry = crossmodel.Entry(q_lm, group="natural", role=f"{scheme} round trip", epoch=base_entry.epoch,
                                   step=base_entry.step)
        q_runs = crossmodel.analyse_entry(q_entry, datasets, profile, **opts)
        rows += [crossmodel.entry_row(q_entry, run, n_boot=cross.n_boot) for run in q_runs.values()]
        runs_of[crossmodel.entry_key(q_entry.group, q_entry.role, q_entry.epoch)] = q_runs
        flips += [crossmodel.flip_table(base_runs[ds], q_runs[ds], scheme) for ds in datasets]
        tensor_tables.append(q_lm.extra["tensors"].assign(scheme=scheme))
table = crossmodel.add_twin_columns(pd.DataFrame(rows), runs_of, n_boot=cross.n_boot)
flip_df = pd.DataFrame(flips)

# %%
full = pd.concat([table, crossmodel.paper_rows(datasets)], ignore_index=True)
shown = crossmodel.reader_table(full)
output.save_table(full, f"08_cross_model{suffix}", results_dir,
                 caption=f"Cross-model table, {sample}; the paper's rows (its own full-text sample) below ours.")
output.save_table(shown, f"08_cross_model_readable{suffix}", results_dir,
                 caption=f"Table 1 and the inner loss for every model beside its untrained twin, chance and the "
                         f"paper. {sample}. 95% CIs: cluster bootstrap over texts. '-': not reported (paper) or no "
                         f"token with final loss <= 1.")
shown

# %%
for ds in datasets:
    fig = figures.fig_cross_model(full, ds, f"Non-decreasing norms per model, {ds}",
                                f"{sample}; whiskers: 95% CI; open marker: the untrained twin; star: the paper")
    output.save_figure(fig, f"08_cross_model{suffix}_{ds}", figures_dir)
    fig.show()

# %%
if (table.role == crossmodel.CHECKPOINT).any():
    fig = figures.fig_checkpoints(table, "Sequence-level rate over training, project-trained model",
                                f"{sample}; dashed: the same model at initialisation (its untrained twin); "
                                "whiskers: 95% CI")
    output.save_figure(fig, f"08_checkpoints{suffix}", figures_dir)
    fig.show()

# %%
if len(flip_df):
    output.save_table(flip_df, f"08_quantisation{suffix}", results_dir,
                     caption=f"The project-trained model's last checkpoint in fp32 against its weights rounded with "
                             f"GGUF schemes (Q4_1 as SmolLM2's file, Q4_K_M as Gemma's) on the same tokens: tokens "
                             f"whose verdict flips and the change of each rate. {sample}.")
    output.save_table(pd.concat(tensor_tables, ignore_index=True), f"08_quantised_tensors{suffix}", results_dir,
                     caption="GGUF type and relative Frobenius error of every weight of the project-trained model "
                             "under each scheme (kept: F32).")
    display(flip_df)

# %%
display(Markdown(crossmodel.reading(full, flip_df)))
