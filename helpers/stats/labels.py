"""Scores of hidden states and attention weights against token labels (v2 Fig. 1 and Fig. 3).

- Clustering (Fig. 1): KMeans of states with ``k`` = number of distinct labels, scored by pairwise
  F1 (a pair is positive when both items share a cluster, correct when they share the label), ARI
  and NMI; the chance level is the F1 of the same cluster sizes assigned at random.
- Attention over history (Fig. 3): for queries with per-head attention weights over their history,
  the share of the top-k and of the bottom-k attended positions that carry the query's label,
  computed **per head and then averaged** over heads and queries (the paper aggregates the shares
  across heads, positions and instances; averaging the weights over heads first and ranking the
  average is a different statistic), beside the base rate and a recency control.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


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


def attention_label_shares(
    weights: np.ndarray, hist_labels: np.ndarray, query_labels: np.ndarray, k: int = 10
) -> dict[str, float]:
    """How much attention goes to historical instances with the query's label.

    ``weights``: attention of M queries to their H historical positions, per head [M, n_heads, H]
    (or [M, H] for a single head); ``hist_labels`` [M, H] (position order, the last one nearest the
    query); ``query_labels`` [M]. The shares are computed for every (query, head) and then averaged
    over heads and queries: ``top`` (share of the k most attended positions with the query's label),
    ``bottom`` (same for the k least attended), ``mass`` (attention mass on same-label positions,
    renormalised over the history); and, independent of the weights, ``chance`` (share of all H
    positions with the label: the base rate) and ``recent`` (share of the k positions nearest the
    query: a recency control, since neighbouring tokens often share a task). Ties keep the earlier
    position.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 2:
        w = w[:, None, :]
    same = np.asarray(hist_labels) == np.asarray(query_labels)[:, None]
    if w.ndim != 3 or (w.shape[0], w.shape[2]) != same.shape:
        raise ValueError(f"weights {w.shape} and history labels {same.shape} differ")
    k = min(k, w.shape[2])
    same_h = np.broadcast_to(same[:, None, :], w.shape)
    top = np.argsort(-w, axis=2, kind="stable")[..., :k]
    bottom = np.argsort(w, axis=2, kind="stable")[..., :k]
    total = w.sum(axis=2)
    return {
        "top": float(np.take_along_axis(same_h, top, 2).mean()),
        "bottom": float(np.take_along_axis(same_h, bottom, 2).mean()),
        "chance": float(same.mean()),
        "recent": float(same[:, w.shape[2] - k :].mean()),
        "mass": float(((w * same_h).sum(axis=2) / np.where(total > 0, total, 1)).mean()),
    }


def attention_table(
    attention: np.ndarray, hist_labels: dict[str, np.ndarray], query_labels: dict[str, np.ndarray], k: int = 10
) -> pd.DataFrame:
    """:func:`attention_label_shares` for every block of ``attention`` [L, M, n_heads, H] (or
    [L, M, H]) and every label type: one row per (layer, label) with top, bottom, chance, recent, mass."""
    rows = []
    for layer in range(attention.shape[0]):
        for kind in hist_labels:
            shares = attention_label_shares(attention[layer], hist_labels[kind], query_labels[kind], k)
            rows.append({"layer": layer, "label": kind, **shares})
    return pd.DataFrame(rows)
