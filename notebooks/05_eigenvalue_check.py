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
# # 05 · Eigenvalue check of linear block surrogates (Eq. 10-12, Proposition 1, Table 2)
#
# The paper explains the growing norm of the current token's representation with a linear surrogate of each block,
# `W_linear = (I + W_FFN)(I + W_MHSA)` with `W_MHSA = sum_h sum_i W_O^h W_V^h z_i z_i^T (W_K^h)^T W_Q^h` (linear
# attention over the context) and `W_FFN = W_2 W_1` (activation removed), and Proposition 1: if
# `sum_i lambda_i a_i b_i >= sum_i a_i b_i` for the eigen-decomposition of `W^T W`, then `||W x|| >= ||x||`.
# Table 2 reports that **100%** of GPT-2's matrices meet the condition on both datasets.
#
# Since `W^T W` is symmetric, `U^-1 = U^T`, `a = b` and the condition *is* `||W x||^2 >= ||x||^2`: we compute both
# (eigen-decomposition in float64, `b` by a linear solve) and check that they agree. `x` is the current token `z_n`
# (the last kept token of each text) at the input of the block. Three constructions, on the same tokens:
#
# * **linear**: the paper's Eq. 12 (plain FFNs only: a gated FFN has no linear form without its activation, which
#   is why the paper skipped LLaMA);
# * **frozen**: beyond the paper, the FFN with its activation frozen at the current token
#   (`W_down diag(act(W_gate u_n)) W_up` for SwiGLU / GeGLU, `W_2 diag(act(p_n)/p_n) W_1` for GELU, `u_n` = the real
#   FFN input of the current token, `p_n` its pre-activation: exact for the FFN at that token), same linear attention;
# * **jacobian**: beyond the paper, the exact local Jacobian `d z^(l+1)_n / d z^l_n` of the real block call
#   (LayerNorm, biases, softmax and rotary embeddings included, other positions held fixed).
#
# Each surrogate's verdict (grow / shrink) is compared with what the real block does, `||z^(l+1)_n|| / ||z^l_n||`.
# LayerNorm, biases, the softmax scale (and rotary embeddings) are omitted as in the paper; the last section
# undoes each omission to show its effect.

# %% tags=["parameters"]
profile = "default"          # "smoke" (tests), "default" (make reproduce, 2-core CPU), "paper" (more samples)
model = "smollm2-135m"       # registry name, hub id, local dir or .gguf (Llama, Gemma, Qwen2, Mistral or GPT-2 family)
datasets = ["wikitext-103", "1bw"]
n_samples = None             # texts per dataset (one current token each); None: the profile's value
max_tokens = None            # tokens kept per text; None: the profile's value
constructions = ["linear", "frozen", "jacobian"]
include_trained = True       # the project's natural-text GPT-2-architecture model (notebook 06), when trained
include_untrained = True     # its randomly initialised twin: the control
extra_models = ["gpt2"]      # hub ids, used only when already in the local Hugging Face cache (runs offline)
device = "cpu"
dtype = "float32"
seed = 0
torch_threads = 1            # 1 is fastest on a small shared CPU; None keeps torch's default
data_dir = None              # None: $METALEARN_DATA, else the Hugging Face hub
figures_dir = "figures"
results_dir = "results"
cache_dir = "results/cache"
filtered_dir = "data/filtered"

# %%
import sys
import time
from pathlib import Path

ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
sys.path.insert(0, str(ROOT))
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch
from IPython.display import Markdown, display
from plotly.subplots import make_subplots

# %% [markdown]
# ## Models and samples
# %%
from helpers import linear, plots
from helpers.data import load_samples
from helpers.models import load_model
from helpers.profiles import get_profile

if torch_threads:
    torch.set_num_threads(torch_threads)
prof = get_profile(profile).eigen
n_samples = n_samples or prof.n_samples
max_tokens = max_tokens or prof.max_tokens
models = [load_model(model, device=device, dtype=dtype)]
if include_trained:
    trained = linear.load_trained_natural(cache_dir, profile, seed, device)
    if trained is None:
        print(f"the natural-text GPT-2-architecture model of profile '{profile}' is not trained yet: run notebook 06 first")
    else:
        models.append(trained)
if include_untrained:
    models.append(linear.untrained_twin(profile, seed))
for hub_id in extra_models:
    if linear.hub_model_cached(hub_id):
        models.append(load_model(hub_id, device=device, dtype=dtype))
    else:
        print(f"'{hub_id}' is not in the local Hugging Face cache (offline run): skipped")
for m in models:
    print(m.describe())

# %%
texts = {ds: load_samples(ds, ROOT / filtered_dir, data_dir) for ds in datasets}
rows, spectra, token_ids, timings = [], {}, {}, []
for ds in datasets:
    _, token_ids[ds] = linear.pick_samples(texts[ds], models, n_samples, max_tokens, prof.min_tokens, seed)
    for m in models:
        t0 = time.time()
        layers = linear.profile_layers(m.n_layers, prof.layer_stride)
        r, sp = linear.eigen_records(m, token_ids[ds][m.name], constructions, spectra_samples=prof.spectra_samples,
                                     layers=layers)
        rows += [dict(row, model=m.label, dataset=ds) for row in r]
        spectra[(m.label, ds)] = sp
        timings.append((m.label, ds, round(time.time() - t0, 1)))
df = pd.DataFrame(rows)
assert (df["prop1"] == df["direct"]).all(), "Proposition 1 and the direct check disagree"
(ROOT / results_dir).mkdir(parents=True, exist_ok=True)
df.to_csv(ROOT / results_dir / "05_records.csv", index=False)  # one row per (model, dataset, sample, layer, construction)
n_tok = {ds: sorted({len(i) for i in token_ids[ds][models[0].name]}) for ds in datasets}
caption = (f"{'; '.join(m.describe() for m in models)} | {', '.join(datasets)}: {n_samples} texts each (>= 10 words, "
           f"WikiText headings dropped, 1BW 5,000-sentence seeded sample), truncated to {max_tokens} tokens; current token "
           f"= last kept token | profile {profile}")
fig_caption = ("<br>".join(m.describe() for m in models) + f"<br>{', '.join(datasets)}: {n_samples} texts each, "
               f"<= {max_tokens} tokens, current token = last; profile {profile}")
print(pd.DataFrame(timings, columns=["model", "dataset", "seconds"]).to_string(index=False))
print("Proposition 1 and the direct check agree on all", len(df), "matrices")

# %% [markdown]
# ## Table 2: share of matrices meeting Proposition 1 (paper: 100% for GPT-2)

# %%
t2 = linear.table2(df).reset_index()
t2.insert(t2.columns.get_loc("overall") + 1, "paper_GPT-2_%", t2["dataset"].map(linear.PAPER_TABLE2))
plots.save_table(t2.round(1), "05_table2_per_layer", ROOT / results_dir,
                 caption="Table 2-style: % of constructed matrices meeting Proposition 1, per layer (L0 = first block) "
                         "and overall; the paper's value is for GPT-2 (124M). " + caption)
overall = t2[["model", "dataset", "construction", "overall", "paper_GPT-2_%", "n"]]
plots.save_table(overall.round(1), "05_table2_overall", ROOT / results_dir,
                 caption="Table 2-style overall: % of matrices meeting Proposition 1. " + caption)
overall.round(1)

# %% [markdown]
# ## Does the surrogate's verdict match the real block?

# %%
agree = linear.agreement_table(df).reset_index()
plots.save_table(agree.round(3), "05_surrogate_agreement", ROOT / results_dir,
                 caption="How well each surrogate predicts the real block: meets_% = Proposition 1 holds; real_grows_% = "
                         "the real block does not shrink ||z_n||; agree_% = same verdict; Spearman correlation and median "
                         "|log ratio error| between the surrogate's ||W z_n||/||z_n|| and the real ratio. " + caption)
agree.round(3)

# %%
first = df[df.model == models[0].label]
fig = go.Figure()
for (name, ds), g in first.groupby(["construction", "dataset"]):
    pct = g.groupby("layer")["meets"].mean() * 100
    fig.add_trace(go.Scatter(x=pct.index, y=pct.values, mode="lines+markers", name=f"{name} meets ({ds})"))
for ds, g in first.groupby("dataset"):
    pct = g.groupby("layer")["real_grows"].mean() * 100
    fig.add_trace(go.Scatter(x=pct.index, y=pct.values, mode="lines", line=dict(dash="dot", color="black"),
                             name=f"real block grows ({ds})"))
fig.add_hline(y=100, line=dict(color="grey", dash="dash"), annotation_text="paper (GPT-2): 100%")
fig.update_layout(xaxis_title="block l", yaxis_title="% of samples", yaxis_range=[-5, 105])
plots.with_caption(fig, f"Proposition 1 per layer vs the real block: {models[0].label}", models[0].describe()
                   + f"<br>{', '.join(datasets)}: {n_samples} texts each, <= {max_tokens} tokens; profile {profile}")
plots.save_figure(fig, "05_per_layer_" + models[0].name.replace("/", "_"), ROOT / figures_dir)
fig

# %%
fig = px.scatter(df, x="real_ratio", y="ratio", color="model", symbol="dataset", facet_col="construction",
                 log_x=True, log_y=True, hover_data=["layer", "sample"], facet_col_spacing=0.06,
                 labels={"real_ratio": "real ratio", "ratio": "surrogate ratio"})
fig.add_hline(y=1, line=dict(color="grey", dash="dash"))
fig.add_vline(x=1, line=dict(color="grey", dash="dash"))
fig.for_each_yaxis(lambda ax: ax.update(showticklabels=True))
plots.with_caption(fig, "Surrogate ||W z_l||/||z_l|| (y) against the real ||z_(l+1)||/||z_l|| (x); agreement = same side of 1",
                   fig_caption)
fig.update_layout(margin={"t": 150}, legend=dict(orientation="h", y=-0.25))
plots.save_figure(fig, "05_surrogate_vs_real_ratio", ROOT / figures_dir)
fig

# %% [markdown]
# ## Eigenvalue spectra of W^T W

# %%
figs = []
for m in models:
    sp = linear.spectra_frame(spectra[(m.label, datasets[0])])
    names = [c for c in constructions if c in set(sp.construction)]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names)
    layers = sorted(sp.layer.unique())
    colors = px.colors.sample_colorscale("Viridis", [i / max(1, len(layers) - 1) for i in range(len(layers))])
    for j, name in enumerate(names, start=1):
        for layer, color in zip(layers, colors, strict=False):
            g = sp[(sp.construction == name) & (sp.layer == layer) & (sp["sample"] == 0)]
            fig.add_trace(go.Scatter(x=g["rank"], y=g.eigenvalue, mode="lines", line=dict(color=color, width=1),
                                     name=f"block {layer}", legendgroup=str(layer), showlegend=(j == 1)), row=1, col=j)
        fig.add_hline(y=1, line=dict(color="red", dash="dash"), row=1, col=j)
    fig.update_yaxes(type="log", exponentformat="power")
    fig.update_yaxes(title_text="eigenvalue of W^T W (log)", row=1, col=1)
    fig.update_xaxes(title_text="rank (0 = largest)")
    plots.with_caption(fig, f"Eigenvalue spectra of W^T W, first sample, {datasets[0]}", m.describe()
                       + f"<br>{datasets[0]}: first of {n_samples} texts, <= {max_tokens} tokens; profile {profile}")
    plots.save_figure(fig, "05_spectra_" + m.name.replace("/", "_"), ROOT / figures_dir)
    figs.append(fig)
figs[0]

# %% [markdown]
# ## What each omission does (LayerNorm, biases, softmax scale, rotary embeddings)

# %%
ablation_rows = []
ds0 = datasets[0]
for m in models[:2]:
    ids = token_ids[ds0][m.name][: prof.ablation_samples]
    layers = linear.profile_layers(m.n_layers, prof.ablation_layer_stride)
    for opts in linear.OPTION_VARIANTS:
        r, _ = linear.eigen_records(m, ids, [c for c in constructions if c != "jacobian"], options=opts, layers=layers)
        ablation_rows += [dict(row, model=m.label, options=opts.label()) for row in r]
ablation = linear.agreement_table(ablation_rows).reset_index()
plots.save_table(ablation.round(3), "05_option_ablation", ROOT / results_dir,
                 caption=f"Effect of each omission on the linear surrogates ({ds0}, {prof.ablation_samples} text(s), "
                         f"layer stride {prof.ablation_layer_stride}): layernorm = norms frozen at the current token, "
                         "bias = affine surrogate (biases and norm offsets kept), scale = softmax scale, rotary = rotary "
                         "embeddings at the real positions. " + caption)
ablation.round(3)


# %% [markdown]
# ## Summary

# %%
def pct(model_label, construction, col):
    g = agree[(agree.model == model_label) & (agree.construction == construction)]
    return ", ".join(f"{r['dataset']} {r[col]:.0f}%" for r in g.to_dict("records")) or "n/a"

lines = []
for m in models:
    for c in constructions:
        if ((agree.model == m.label) & (agree.construction == c)).any():
            lines.append(f"- **{m.label}**, {c}: meets Prop. 1 {pct(m.label, c, 'meets_%')}; real block grows "
                         f"{pct(m.label, c, 'real_grows_%')}; verdict agrees with the real block {pct(m.label, c, 'agree_%')}")
display(Markdown("\n".join(lines)))

# %% [markdown]
# **Reading** (numbers from the default profile; the summary above prints this run's). Table 2's 100%
# reproduces on the trained models: the paper's construction on the trained GPT-2-architecture model, and its
# frozen-gate version on SmolLM2 (whose SwiGLU FFN has no Eq. 11 form), meet Proposition 1 for every matrix on both
# datasets. But the surrogate does not model the block: its ratio `||W z_n|| / ||z_n||` is ~3-2,000 (GPT-2
# architecture, Spearman correlation with the real ratio *negative*) and ~10^3-10^12 (SmolLM2) where the real block
# changes the norm by a factor 0.9-48. Without LayerNorm and softmax, `W_MHSA` sums raw scores over all n context tokens
# and grows like n ||z||^2, so the verdict is 'grows' almost whatever the weights: it agrees with the real block only as
# often as the real block grows (80-95%) and never flags a block that shrinks the norm. Undoing the omissions (last
# table) cuts the overestimate (median |log ratio error| ~24 -> ~3 for SmolLM2, ~6 -> ~1.2 for the GPT-2 architecture)
# without changing a single verdict. The untrained control (weights ~0.02, surrogate ~ identity) meets the condition
# only 65-90% of the time although its real blocks always grow. The exact Jacobian has the right magnitude (median
# |log error| ~0.1) but its verdict matches the real block only ~35% (SmolLM2) to 45-65% (GPT-2 architecture) of the
# time: in pre-norm blocks the norm is scale-invariant, so attention contributes nothing along `z_n` and
# `J z_n ~ z_n + (FFN term)`; a local stretch along `z_n` is not the finite change `||f(z_n)||` vs `||z_n||`.
# Where we differ from the paper: the 100% is reproduced, but it reflects the surrogate's scale, not evidence that the
# blocks are norm-increasing maps. GPT-2 (124M) itself was not checked (not in the local Hugging Face cache, offline);
# our GPT-2-architecture model is small (4 layers, d=128, briefly trained) and the samples are few (see the profile).
