"""Per-checkpoint measurements of a model trained by :mod:`helpers.train.recipes` (v2 reconstruction).

For one checkpoint:

- outer loss: mean next-token cross-entropy on a fixed subset of training and validation windows;
- inner loss (Eq. 14) per layer on training windows, from :func:`helpers.residual.records.analyse_batch`,
  with the model's own loss on exactly the same tokens beside it (``model_loss``);
- norm statistics of Table 1 (:func:`helpers.stats.monotone.monotone_stats` on layers 0..L-1) on validation
  windows, tokens at position >= ``min_position``;
- (synthetic data) clustering of validation residual states per layer (layer ``l < L`` = input of
  block ``l``, layer 0 = embeddings; layer ``L`` = last block output before the final norm), scored
  by :func:`helpers.stats.labels.clustering_table`;
- (synthetic data) attention of the last read token of a validation sequence (the unseen instance)
  to the earlier tokens of its sequence (the historical instances), per block and per head, scored
  by :func:`helpers.stats.labels.attention_table`.

Windows are [N, T+1] token arrays: the model reads positions 0..T-1; position T is only a target.
Its embedding is never trained, so every statistic of hidden states uses the T read positions only.

:func:`measure_run` caches each checkpoint's result as ``measures-<kind>-<hash>.json`` inside it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm  # text bars: they stream through papermill and need no ipywidgets

from helpers.config import MeasureConfig
from helpers.corpus.synthetic import LABEL_KINDS, SyntheticData
from helpers.lm.load import LoadedModel
from helpers.paths import atomic_write_text, config_hash
from helpers.residual.hooks import capture_residuals
from helpers.residual.records import analyse_batch
from helpers.stats.labels import attention_table, clustering_table
from helpers.stats.monotone import monotone_stats
from helpers.train.checkpoints import load_checkpoint
from helpers.train.loop import evaluate_loss

# Part of every cache key: bump it when a measurement changes meaning, so old results are not reused.
# 2: norms on the T read positions only; model_loss beside the inner loss; attention shares per head.
MEASURE_VERSION = 2


Measurement = dict[str, list[dict]]


def _subset(n_total: int, n: int, seed: int) -> np.ndarray:
    if n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


@torch.no_grad()
def window_records(lm: LoadedModel, windows: np.ndarray, mcfg: MeasureConfig, lens: bool) -> dict[str, np.ndarray]:
    """:func:`helpers.residual.records.analyse_batch` over ``windows`` [N, T+1] in batches, for the T read
    positions 0..T-1 only (every one of them has its next token as target; position T is dropped)."""

    read = np.asarray(windows).shape[1] - 1
    parts = []
    for s in range(0, len(windows), mcfg.batch_size):
        rows = [list(map(int, r)) for r in windows[s : s + mcfg.batch_size]]
        rec = analyse_batch(lm, rows, min_position=mcfg.min_position, lens=lens, logit_lens=False)
        keep = rec["position"] < read
        rec = {k: v[keep] for k, v in rec.items()}
        rec["sample"] = rec["sample"] + s
        parts.append(rec)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def inner_loss_rows(inner: np.ndarray, final: np.ndarray) -> list[dict]:
    """Per-layer mean / std / median of inner losses [N, L] (NaN = no target), for all tokens and for
    the paper's subset (final loss <= 1), with ``model_loss``: the mean of the model's own per-token
    loss ``final`` [N] over exactly the same tokens (the last layer's inner loss equals it)."""
    rows = []
    ok = ~np.isnan(final)
    for subset, keep in (("all", ok), ("final<=1", ok & (np.nan_to_num(final, nan=np.inf) <= 1.0))):
        model_loss = float(final[keep].mean()) if keep.any() else float("nan")
        for layer in range(inner.shape[1]):
            v = inner[keep, layer]
            rows.append({"subset": subset, "layer": layer, "n": int(v.size),
                         "mean": float(v.mean()) if v.size else float("nan"),
                         "std": float(v.std()) if v.size else float("nan"),
                         "median": float(np.median(v)) if v.size else float("nan"),
                         "model_loss": model_loss})
    return rows


def measure_lm_checkpoint(lm: LoadedModel, train_windows: np.ndarray, val_windows: np.ndarray,
                          mcfg: MeasureConfig) -> Measurement:
    """Outer loss (train / validation subsets), inner loss per layer on training windows and Table 1
    norm statistics on validation windows (read positions only) for one checkpoint ``lm``."""

    tr = train_windows[_subset(len(train_windows), mcfg.n_outer, mcfg.seed)]
    va = val_windows[_subset(len(val_windows), mcfg.n_outer, mcfg.seed + 1)]
    device = str(lm.input_device)
    outer = [{"split": "train", "loss": evaluate_loss(lm.model, tr, mcfg.batch_size, device), "n_windows": len(tr)},
             {"split": "val", "loss": evaluate_loss(lm.model, va, mcfg.batch_size, device), "n_windows": len(va)}]
    rec = window_records(lm, train_windows[_subset(len(train_windows), mcfg.n_inner, mcfg.seed + 2)], mcfg, lens=True)
    inner = inner_loss_rows(rec["inner_loss"], rec["final_loss"])
    rec = window_records(lm, val_windows[_subset(len(val_windows), mcfg.n_norm, mcfg.seed + 3)], mcfg, lens=False)
    keep = rec["position"] >= mcfg.min_position
    norms = [{"tokens": f"position>={mcfg.min_position}", **monotone_stats(rec["norms"][keep, : lm.n_layers])},
             {"tokens": "all positions", **monotone_stats(rec["norms"][:, : lm.n_layers])}]
    return {"outer": outer, "inner": inner, "norms": norms}


def cluster_sample(n_rows: int, seq_len: int, n: int, min_position: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded sample of ``n`` distinct (row, position) pairs with position in [min_position, seq_len)."""
    width = seq_len - min_position
    flat = _subset(n_rows * width, n, seed)
    return flat // width, flat % width + min_position


@torch.no_grad()
def last_token_attention(model: torch.nn.Module, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Attention [L, M, n_heads, T-1] of the last position of each row of ``inputs`` [M, T] to
    positions 0..T-2, per block and per head (the model must use eager attention)."""
    data = torch.as_tensor(np.asarray(inputs), dtype=torch.long)
    device = next(model.parameters()).device
    parts = []
    for s in range(0, len(data), batch_size):
        out = model(input_ids=data[s : s + batch_size].to(device), output_attentions=True, use_cache=False)
        if not out.attentions or out.attentions[0] is None:
            raise RuntimeError("the model returned no attention weights: load it with attn_implementation='eager'")
        parts.append(torch.stack([a[:, :, -1, :-1].float() for a in out.attentions]).cpu())
    return torch.cat(parts, dim=1).numpy()


def measure_synthetic_checkpoint(lm: LoadedModel, data: SyntheticData, mcfg: MeasureConfig) -> Measurement:
    """:func:`measure_lm_checkpoint` plus clustering of validation states and attention over history."""

    out = measure_lm_checkpoint(lm, data.train.tokens, data.val.tokens, mcfg)
    val = data.val
    labels = {kind: val.labels(kind) for kind in LABEL_KINDS}
    rows, cols = cluster_sample(len(val), val.seq_len, mcfg.n_cluster, mcfg.min_position, mcfg.seed + 4)
    needed = np.unique(rows)
    remap = np.searchsorted(needed, rows)
    states = []
    for s in range(0, len(needed), mcfg.batch_size):
        ids = torch.as_tensor(val.inputs[needed[s : s + mcfg.batch_size]], dtype=torch.long)
        states.append(capture_residuals(lm, ids, torch.ones_like(ids)).states.float().cpu())
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


def measure_run(checkpoints: list[Path], measure: Callable[[LoadedModel], Measurement], mcfg: MeasureConfig,
                kind: str, extra_key: dict | None = None, progress: bool = True,
                device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Apply ``measure(lm) -> dict[str, list[dict]]`` to every checkpoint (cached as
    ``measures-<kind>-<hash>.json`` in the checkpoint) and stack the results into one DataFrame per
    measurement, with ``epoch`` and ``step`` columns."""

    key = config_hash({"measure": asdict(mcfg), "kind": kind, "version": MEASURE_VERSION, **(extra_key or {})})
    tables: dict[str, list[dict]] = {}
    for ck in tqdm(checkpoints, desc=f"measuring {kind}", disable=not progress):
        cache = ck / f"measures-{kind}-{key}.json"
        if cache.is_file():
            result = json.loads(cache.read_text())
        else:
            torch.manual_seed(mcfg.seed)
            result = measure(load_checkpoint(ck, device))
            atomic_write_text(cache, json.dumps(result))
        state = json.loads((ck / "state.json").read_text())
        for name, rows in result.items():
            tables.setdefault(name, []).extend({"epoch": state["epoch"], "step": state["step"], **r} for r in rows)
    return {name: pd.DataFrame(rows) for name, rows in tables.items()}
