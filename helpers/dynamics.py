"""Training dynamics of the inner optimisation (v2 reconstruction) and the Eq. (1) identity.

Per checkpoint of a model trained by :mod:`helpers.training`:

- outer loss: mean next-token cross-entropy on a fixed subset of training and validation windows;
- inner loss (Eq. 14) per layer on training windows, from :func:`helpers.analysis.analyse_batch`;
- norm statistics of Table 1 (:func:`helpers.norms.monotone_stats` on layers 0..L-1) on validation
  windows, tokens at position >= ``min_position``;
- (synthetic data) clustering of validation residual states per layer (layer ``l < L`` = input of
  block ``l``, layer 0 = embeddings; layer ``L`` = last block output before the final norm) with
  KMeans, k = number of distinct labels, scored by pairwise F1, ARI and NMI against each label;
- (synthetic data) attention of the last read token of a validation sequence (the unseen instance)
  to the earlier tokens of its sequence (the historical instances), per block, averaged over heads:
  share of the top-k and bottom-k attended positions that carry the query's label, beside the
  chance level (the label's base rate in that history) and the attention mass on same-label positions.

Measurements are cached per checkpoint (``measures-<kind>-<hash>.json`` inside the checkpoint).

Eq. (1): :func:`train_linear_sgd`, :func:`outer_product_weights` and :func:`dual_form` show that a
linear layer trained by SGD is its initial weights minus a sum of outer products of output
gradients and inputs, and that applying it to a new input is an attention-like sum over the history.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from helpers.profiles import MeasureConfig
from helpers.store import config_hash
from helpers.synthetic import LABEL_KINDS, SyntheticData

# ----------------------------------------------------------------------------------------------
# clustering scores


def pair_counts(labels_true: np.ndarray, labels_pred: np.ndarray) -> tuple[int, int, int]:
    """Pair counts of two labelings of the same N items: (pairs together in both, pairs together in
    ``labels_pred``, pairs together in ``labels_true``), from the contingency table."""
    t = np.unique(np.asarray(labels_true), return_inverse=True)[1].ravel()
    p = np.unique(np.asarray(labels_pred), return_inverse=True)[1].ravel()
    if t.shape != p.shape:
        raise ValueError(f"label arrays differ in length: {t.shape} vs {p.shape}")
    table = np.zeros((t.max() + 1, p.max() + 1), dtype=np.int64) if t.size else np.zeros((0, 0), np.int64)
    np.add.at(table, (t, p), 1)

    def pairs(x: np.ndarray) -> int:
        return int((x * (x - 1) // 2).sum())

    return pairs(table), pairs(table.sum(axis=0)), pairs(table.sum(axis=1))


def pairwise_f1(labels_true: np.ndarray, labels_pred: np.ndarray) -> dict[str, float]:
    """Pairwise precision, recall and F1 of a clustering against reference labels.

    A pair of items is a positive when the clustering puts them together; it is correct when they
    share a reference label. With no predicted (reference) pairs, precision (recall) is 1.
    """
    both, pred, true = pair_counts(labels_true, labels_pred)
    precision = both / pred if pred else 1.0
    recall = both / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def cluster_scores(states: np.ndarray, labels: np.ndarray, seed: int = 0, n_init: int = 3) -> dict[str, float]:
    """KMeans of ``states`` [N, D] with k = number of distinct ``labels``; pairwise F1 / precision /
    recall, ARI and NMI against ``labels``, and ``f1_chance``: F1 of the same cluster sizes assigned
    at random (a shuffled KMeans labeling)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels = np.asarray(labels)
    k = int(len(np.unique(labels)))
    x = np.asarray(states, dtype=np.float64)
    pred = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x) if k > 1 else np.zeros(len(x), int)
    shuffled = np.random.default_rng(seed).permutation(pred)
    return {
        "k": k,
        **pairwise_f1(labels, pred),
        "ari": float(adjusted_rand_score(labels, pred)),
        "nmi": float(normalized_mutual_info_score(labels, pred)),
        "f1_chance": pairwise_f1(labels, shuffled)["f1"],
    }


def clustering_table(states: np.ndarray, labels: dict[str, np.ndarray], seed: int = 0, n_init: int = 3) -> pd.DataFrame:
    """Cluster scores for every layer of ``states`` [L+1, N, D] against every labeling [N]: one row per
    (layer, label) with k, f1, precision, recall, ari, nmi, f1_chance."""
    rows = []
    for layer in range(states.shape[0]):
        for kind, lab in labels.items():
            rows.append({"layer": layer, "label": kind, **cluster_scores(states[layer], lab, seed, n_init)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# attention over history


def attention_label_shares(
    weights: np.ndarray, hist_labels: np.ndarray, query_labels: np.ndarray, k: int = 10
) -> dict[str, float]:
    """How much attention goes to historical instances with the query's label.

    ``weights`` [M, H]: attention of M queries to their H historical positions; ``hist_labels``
    [M, H] (position order, the last one nearest the query); ``query_labels`` [M]. Returns, averaged
    over queries: ``top`` (share of the k most attended positions with the query's label),
    ``bottom`` (same for the k least attended), ``chance`` (share of all H positions with the
    label: the base rate), ``recent`` (share of the k positions nearest the query: a recency control,
    since neighbouring tokens often share a task) and ``mass`` (attention mass on same-label
    positions, renormalised over the history). Ties keep the earlier position.
    """
    w = np.asarray(weights, dtype=np.float64)
    same = np.asarray(hist_labels) == np.asarray(query_labels)[:, None]
    if w.shape != same.shape:
        raise ValueError(f"weights {w.shape} and history labels {same.shape} differ")
    k = min(k, w.shape[1])
    top = np.argsort(-w, axis=1, kind="stable")[:, :k]
    bottom = np.argsort(w, axis=1, kind="stable")[:, :k]
    total = w.sum(axis=1)
    return {
        "top": float(np.take_along_axis(same, top, 1).mean()),
        "bottom": float(np.take_along_axis(same, bottom, 1).mean()),
        "chance": float(same.mean()),
        "recent": float(same[:, w.shape[1] - k :].mean()),
        "mass": float(((w * same).sum(axis=1) / np.where(total > 0, total, 1)).mean()),
    }


@torch.no_grad()
def last_token_attention(model: torch.nn.Module, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Attention [L, M, T-1] of the last position of each row of ``inputs`` [M, T] to positions
    0..T-2, per block, averaged over heads (the model must use eager attention)."""
    data = torch.as_tensor(np.asarray(inputs), dtype=torch.long)
    device = next(model.parameters()).device
    parts = []
    for s in range(0, len(data), batch_size):
        out = model(input_ids=data[s : s + batch_size].to(device), output_attentions=True, use_cache=False)
        if not out.attentions or out.attentions[0] is None:
            raise RuntimeError("the model returned no attention weights: load it with attn_implementation='eager'")
        parts.append(torch.stack([a[:, :, -1, :-1].float().mean(dim=1) for a in out.attentions]).cpu())
    return torch.cat(parts, dim=1).numpy()


def attention_table(
    attention: np.ndarray, hist_labels: dict[str, np.ndarray], query_labels: dict[str, np.ndarray], k: int = 10
) -> pd.DataFrame:
    """:func:`attention_label_shares` for every block of ``attention`` [L, M, H] and every label type:
    one row per (layer, label) with top, bottom, chance, recent, mass."""
    rows = []
    for layer in range(attention.shape[0]):
        for kind in hist_labels:
            shares = attention_label_shares(attention[layer], hist_labels[kind], query_labels[kind], k)
            rows.append({"layer": layer, "label": kind, **shares})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# per-checkpoint measurements


def _subset(n_total: int, n: int, seed: int) -> np.ndarray:
    if n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


def _records(lm, windows: np.ndarray, mcfg: MeasureConfig, lens: bool) -> dict[str, np.ndarray]:
    """:func:`helpers.analysis.analyse_batch` over ``windows`` in batches, concatenated."""
    from helpers.analysis import analyse_batch

    parts = []
    for s in range(0, len(windows), mcfg.batch_size):
        rows = [list(map(int, r)) for r in windows[s : s + mcfg.batch_size]]
        rec = analyse_batch(lm, rows, min_position=mcfg.min_position, lens=lens, logit_lens=False)
        rec["sample"] = rec["sample"] + s
        parts.append(rec)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def inner_loss_rows(inner: np.ndarray, final: np.ndarray) -> list[dict]:
    """Per-layer mean / std / median of inner losses [N, L] (NaN = no target), for all tokens and for
    the paper's subset (final loss <= 1)."""
    rows = []
    ok = ~np.isnan(final)
    for subset, keep in (("all", ok), ("final<=1", ok & (np.nan_to_num(final, nan=np.inf) <= 1.0))):
        for layer in range(inner.shape[1]):
            v = inner[keep, layer]
            rows.append({"subset": subset, "layer": layer, "n": int(v.size),
                         "mean": float(v.mean()) if v.size else float("nan"),
                         "std": float(v.std()) if v.size else float("nan"),
                         "median": float(np.median(v)) if v.size else float("nan")})
    return rows


def measure_lm_checkpoint(lm, train_windows: np.ndarray, val_windows: np.ndarray, mcfg: MeasureConfig) -> dict[str, list[dict]]:
    """Outer loss (train / validation subsets), inner loss per layer on training windows and Table 1
    norm statistics on validation windows for one checkpoint ``lm`` (a LoadedModel)."""
    from helpers.norms import monotone_stats
    from helpers.training import evaluate_loss

    tr = train_windows[_subset(len(train_windows), mcfg.n_outer, mcfg.seed)]
    va = val_windows[_subset(len(val_windows), mcfg.n_outer, mcfg.seed + 1)]
    device = str(lm.input_device)
    outer = [{"split": "train", "loss": evaluate_loss(lm.model, tr, mcfg.batch_size, device), "n_windows": len(tr)},
             {"split": "val", "loss": evaluate_loss(lm.model, va, mcfg.batch_size, device), "n_windows": len(va)}]
    rec = _records(lm, train_windows[_subset(len(train_windows), mcfg.n_inner, mcfg.seed + 2)], mcfg, lens=True)
    inner = inner_loss_rows(rec["inner_loss"], rec["final_loss"])
    rec = _records(lm, val_windows[_subset(len(val_windows), mcfg.n_norm, mcfg.seed + 3)], mcfg, lens=False)
    keep = rec["position"] >= mcfg.min_position
    norms = [{"tokens": f"position>={mcfg.min_position}", **monotone_stats(rec["norms"][keep, : lm.n_layers])},
             {"tokens": "all positions", **monotone_stats(rec["norms"][:, : lm.n_layers])}]
    return {"outer": outer, "inner": inner, "norms": norms}


def cluster_sample(n_rows: int, seq_len: int, n: int, min_position: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded sample of ``n`` distinct (row, position) pairs with position in [min_position, seq_len)."""
    width = seq_len - min_position
    flat = _subset(n_rows * width, n, seed)
    return flat // width, flat % width + min_position


def measure_synthetic_checkpoint(lm, data: SyntheticData, mcfg: MeasureConfig) -> dict[str, list[dict]]:
    """:func:`measure_lm_checkpoint` plus clustering of validation states and attention over history."""
    from helpers.capture import capture_residuals

    out = measure_lm_checkpoint(lm, data.train.tokens, data.val.tokens, mcfg)
    val = data.val
    labels = {kind: val.labels(kind) for kind in LABEL_KINDS}
    rows, cols = cluster_sample(len(val), val.seq_len, mcfg.n_cluster, mcfg.min_position, mcfg.seed + 4)
    needed = np.unique(rows)
    remap = np.searchsorted(needed, rows)
    states = []
    for s in range(0, len(needed), mcfg.batch_size):
        ids = torch.as_tensor(val.inputs[needed[s : s + mcfg.batch_size]], dtype=torch.long)
        cap = capture_residuals(lm, ids, torch.ones_like(ids))
        states.append(cap.states.float().cpu())
    st = torch.cat(states, dim=1)[:, remap, cols].numpy()
    clus = clustering_table(st, {k: v[rows, cols] for k, v in labels.items()}, mcfg.seed, mcfg.kmeans_n_init)
    q = _subset(len(val), mcfg.n_attention, mcfg.seed + 5)
    attn = last_token_attention(lm.model, val.inputs[q], mcfg.batch_size)
    t_last = val.seq_len - 1
    att = attention_table(attn, {k: v[q, :t_last] for k, v in labels.items()},
                          {k: v[q, t_last] for k, v in labels.items()}, mcfg.top_k)
    out["clustering"] = clus.to_dict("records")
    out["attention"] = att.to_dict("records")
    return out


def measure_run(checkpoints: list[Path], measure, mcfg: MeasureConfig, kind: str, extra_key: dict | None = None,
                progress: bool = True, device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Apply ``measure(lm) -> dict[str, list[dict]]`` to every checkpoint (cached as
    ``measures-<kind>-<hash>.json`` in the checkpoint) and stack the results into one DataFrame per
    measurement, with ``epoch`` and ``step`` columns."""
    from helpers.training import load_checkpoint

    key = config_hash({"measure": asdict(mcfg), "kind": kind, **(extra_key or {})})
    tables: dict[str, list[dict]] = {}
    for ck in tqdm(checkpoints, desc=f"measuring {kind}", disable=not progress):
        cache = ck / f"measures-{kind}-{key}.json"
        if cache.is_file():
            result = json.loads(cache.read_text())
        else:
            torch.manual_seed(mcfg.seed)
            result = measure(load_checkpoint(ck, device))
            tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(result))
            tmp.replace(cache)
        state = json.loads((ck / "state.json").read_text())
        for name, rows in result.items():
            tables.setdefault(name, []).extend({"epoch": state["epoch"], "step": state["step"], **r} for r in rows)
    return {name: pd.DataFrame(rows) for name, rows in tables.items()}


# ----------------------------------------------------------------------------------------------
# Eq. (1): a linear layer trained by SGD, in primal and dual form


@dataclass
class SGDRecord:
    """A linear layer ``y = W x`` trained by plain SGD, one example per step: the initial and final
    weights, the inputs ``xs`` [S, d_in], the output gradients ``grads`` [S, d_out] (dL/dy at each
    step), the learning rates ``lrs`` [S] and the losses [S]."""

    w0: np.ndarray
    w_final: np.ndarray
    xs: np.ndarray
    grads: np.ndarray
    lrs: np.ndarray
    losses: np.ndarray


def train_linear_sgd(w0: np.ndarray, xs: np.ndarray, targets: np.ndarray, lrs: np.ndarray,
                     dtype: torch.dtype = torch.float64, momentum: float = 0.0) -> SGDRecord:
    """Train ``y = W x`` (no bias) with ``torch.optim.SGD``, one example per step, softmax cross-entropy
    against class ``targets`` [S], learning rate ``lrs[t]`` at step t; record inputs and dL/dy.
    ``momentum > 0`` breaks Eq. (1) (the update is no longer the current gradient alone)."""
    w = torch.nn.Parameter(torch.as_tensor(np.asarray(w0), dtype=dtype).clone())
    opt = torch.optim.SGD([w], lr=float(lrs[0]), momentum=momentum)
    grads, losses = [], []
    x_all = torch.as_tensor(np.asarray(xs), dtype=dtype)
    y_all = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    for t in range(len(x_all)):
        for group in opt.param_groups:
            group["lr"] = float(lrs[t])
        y = w @ x_all[t]
        y.retain_grad()
        loss = F.cross_entropy(y[None], y_all[t : t + 1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        grads.append(y.grad.detach().clone())
        losses.append(float(loss.detach()))
    return SGDRecord(
        w0=np.asarray(w0).astype(x_all.numpy().dtype), w_final=w.detach().numpy().copy(), xs=x_all.numpy(),
        grads=torch.stack(grads).numpy(), lrs=np.asarray(lrs, dtype=x_all.numpy().dtype), losses=np.array(losses),
    )


def outer_product_weights(w0: np.ndarray, xs: np.ndarray, grads: np.ndarray, lrs: np.ndarray) -> np.ndarray:
    """Eq. (1): ``W_0 - sum_t eta_t grad_y L_t (outer) x_t``, shape [d_out, d_in]."""
    return w0 - np.einsum("t,to,ti->oi", lrs, grads, xs)


def dual_form(w0: np.ndarray, xs: np.ndarray, grads: np.ndarray, lrs: np.ndarray, x_new: np.ndarray) -> dict[str, np.ndarray]:
    """The trained layer applied to ``x_new`` [d_in] in dual (attention-like) form:
    ``W_T x = W_0 x + sum_t v_t (x_t . x)`` with keys ``x_t``, query ``x``, values ``v_t = -eta_t grad_t``.
    Returns ``output``, ``base`` (W_0 x), ``scores`` [S] (x_t . x) and ``values`` [S, d_out]."""
    scores = xs @ x_new
    values = -lrs[:, None] * grads
    base = w0 @ x_new
    return {"output": base + scores @ values, "base": base, "scores": scores, "values": values}


# ----------------------------------------------------------------------------------------------
# figures


def _epoch_colors(n: int) -> list[str]:
    from plotly.colors import sample_colorscale

    return sample_colorscale("Viridis", [i / max(1, n - 1) for i in range(n)])


def fig_losses(outer: pd.DataFrame, inner: pd.DataFrame, floors: dict[str, float] | None = None, subset: str = "all"):
    """Fig. 2 equivalent: left, inner loss per layer and outer losses over epochs; right, inner loss
    across layers, one line per epoch. Log y-axes; ``floors`` (e.g. oracle, bigram) as dashed lines."""
    from plotly.subplots import make_subplots

    inn = inner[inner["subset"] == subset]
    layers = sorted(inn["layer"].unique())
    fig = make_subplots(rows=1, cols=2, subplot_titles=("losses over training", "inner loss across layers"))
    colors = _epoch_colors(len(layers))
    for c, layer in zip(colors, layers, strict=True):
        d = inn[inn["layer"] == layer]
        fig.add_scatter(x=d["epoch"], y=d["mean"], mode="lines+markers", name=f"inner, layer {layer}",
                        line={"color": c}, legendgroup="layers", legendgrouptitle_text="left: by layer",
                        row=1, col=1)
    for split, dash in (("train", "solid"), ("val", "dot")):
        d = outer[outer["split"] == split]
        fig.add_scatter(x=d["epoch"], y=d["loss"], mode="lines", name=f"outer ({split})",
                        line={"color": "crimson", "dash": dash, "width": 3}, legendgroup="layers", row=1, col=1)
    span = [outer["epoch"].min(), outer["epoch"].max()]
    for (name, value), dash in zip((floors or {}).items(), ("dash", "dot", "dashdot"), strict=False):
        fig.add_scatter(x=span, y=[value, value], mode="lines", name=f"{name} ({value:.3f})",
                        line={"color": "grey", "dash": dash}, legendgroup="layers", row=1, col=1)
    epochs = sorted(inn["epoch"].unique())
    for c, ep in zip(_epoch_colors(len(epochs)), epochs, strict=True):
        d = inn[inn["epoch"] == ep]
        fig.add_scatter(x=d["layer"], y=d["mean"], error_y={"type": "data", "array": d["std"], "visible": False},
                        mode="lines+markers", name=f"epoch {ep}", line={"color": c}, legendgroup="epochs",
                        legendgrouptitle_text="right: by epoch", row=1, col=2)
    fig.update_yaxes(type="log", title_text="cross-entropy (nats)")
    fig.update_xaxes(title_text="epoch", row=1, col=1)
    fig.update_xaxes(title_text="layer l (states fed to the last block)", row=1, col=2, dtick=1)
    return fig


def fig_clustering(clustering: pd.DataFrame, metric: str = "f1"):
    """Fig. 1 equivalent: clustering score of validation states per layer over epochs, one panel per label."""
    from plotly.subplots import make_subplots

    kinds = [k for k in LABEL_KINDS if k in set(clustering["label"])]
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=[f"label: {k}" for k in kinds], shared_yaxes=True)
    layers = sorted(clustering["layer"].unique())
    colors = _epoch_colors(len(layers))
    for j, kind in enumerate(kinds, start=1):
        d = clustering[clustering["label"] == kind]
        for c, layer in zip(colors, layers, strict=True):
            dl = d[d["layer"] == layer]
            fig.add_scatter(x=dl["epoch"], y=dl[metric], mode="lines+markers", name=f"layer {layer}",
                            legendgroup=str(layer), showlegend=j == 1, line={"color": c}, row=1, col=j)
        if metric == "f1" and "f1_chance" in d:
            chance = d.groupby("epoch")["f1_chance"].mean()
            fig.add_scatter(x=chance.index, y=chance.values, mode="lines", name="chance (shuffled clusters)",
                            legendgroup="chance", showlegend=j == 1, line={"color": "grey", "dash": "dash"},
                            row=1, col=j)
        fig.update_xaxes(title_text="epoch", row=1, col=j)
    fig.update_yaxes(title_text=f"pairwise {metric.upper()}", row=1, col=1)
    return fig


def fig_attention(attention: pd.DataFrame, epoch: int, k: int = 10):
    """Fig. 3 equivalent at ``epoch``: per block, share of the top-k / bottom-k attended historical
    positions that carry the query's label, beside the chance level and the recency control (the k
    nearest positions); one panel per label."""
    from plotly.subplots import make_subplots

    d = attention[attention["epoch"] == epoch]
    kinds = [x for x in LABEL_KINDS if x in set(d["label"])]
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=[f"label: {x}" for x in kinds], shared_yaxes=True)
    styles = (("top", f"top-{k} attended", "#1f77b4"), ("bottom", f"last-{k} attended (least)", "#ff7f0e"),
              ("chance", "chance (base rate)", "#7f7f7f"), ("recent", f"{k} nearest positions", "#bcbd22"))
    for j, kind in enumerate(kinds, start=1):
        dk = d[d["label"] == kind]
        for col, name, color in styles:
            fig.add_bar(x=[f"block {v}" for v in dk["layer"]], y=dk[col], name=name, marker_color=color,
                        legendgroup=col, showlegend=j == 1, row=1, col=j)
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="share with the query's label", range=[0, 1], row=1, col=1)
    return fig


def fig_norm_stats(norms: pd.DataFrame, tokens: str | None = None, name: str = ""):
    """Table 1 statistics over training: sequence- and pair-level % non-decreasing vs epoch, with chance."""
    import plotly.graph_objects as go

    d = norms if tokens is None else norms[norms["tokens"] == tokens]
    fig = go.Figure()
    prefix = f"{name}: " if name else ""
    fig.add_scatter(x=d["epoch"], y=d["sequence_pct"], mode="lines+markers", name=f"{prefix}sequence level")
    fig.add_scatter(x=d["epoch"], y=d["pair_pct"], mode="lines+markers", name=f"{prefix}pair level")
    fig.add_scatter(x=d["epoch"], y=d["chance_pct"], mode="lines", name=f"{prefix}chance, sequence level (2^-steps)",
                    line={"dash": "dash", "color": "grey"})
    fig.add_scatter(x=d["epoch"], y=[50.0] * len(d), mode="lines", name=f"{prefix}chance, pair level (50%)",
                    line={"dash": "dot", "color": "grey"})
    fig.update_layout(xaxis_title="epoch", yaxis_title="% non-decreasing (layers 0..L-1)", yaxis_range=[0, 100])
    return fig
