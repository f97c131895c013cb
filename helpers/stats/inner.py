"""The inner loss (Eq. 14) calibrated: is it falling *across* the layers, or only at the end, and is it better than a
uniform guess along the way?

Two references: ``ln |V|`` (the loss of a uniform guess over the vocabulary) and the sample's unigram entropy (the
loss of a guess that knows only token frequencies). The trend is read per token, robust to outliers: Kendall's
tau between layer index and inner loss over the *interior* layers 1..L-2 (layer 0 feeds the last block states it
never sees, layer L-1 is the predictor itself, so both ends are fixed by construction), averaged over tokens with a
cluster-bootstrap interval over texts.
"""

from __future__ import annotations

import numpy as np

from helpers.stats.intervals import cluster_bootstrap


def unigram_entropy(tokens: np.ndarray) -> float:
    """Entropy (nats) of the empirical token distribution of ``tokens`` (the targets of a sample)."""
    _, counts = np.unique(np.asarray(tokens), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def kendall_tau_rows(values: np.ndarray) -> np.ndarray:
    """Kendall's tau-a of each row of ``values`` [N, K] against its column index (K >= 2): +1 rising, -1 falling
    at every pair of columns; NaN for rows with a NaN."""
    v = np.asarray(values, dtype=np.float64)
    k = v.shape[1]
    i, j = np.triu_indices(k, 1)
    return np.sign(v[:, j] - v[:, i]).sum(axis=1) / len(i)


def interior_trend(inner: np.ndarray, groups: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Mean per-token Kendall tau of the inner loss over interior layers 1..L-2 with a 95% cluster-bootstrap CI
    (``tau``, ``tau_lo``, ``tau_hi``; NaN with fewer than 4 layers or no token)."""
    if inner.shape[1] < 4 or not len(inner):
        return {"tau": np.nan, "tau_lo": np.nan, "tau_hi": np.nan}
    tau = kendall_tau_rows(inner[:, 1:-1])
    lo, hi = cluster_bootstrap({"tau": tau}, groups, n_boot, seed=seed)["tau"]
    return {"tau": float(tau.mean()), "tau_lo": lo / 100, "tau_hi": hi / 100}


def calibration(inner: np.ndarray, groups: np.ndarray, targets: np.ndarray, vocab_size: int, n_boot: int = 1000,
                seed: int = 0) -> dict[str, float]:
    """The calibrated summary of inner losses [N, L] (tokens with a lens): median and IQR at layer 0, at the middle
    layer and at the last, ``ln|V|``, the unigram entropy of ``targets``, the share of tokens worse than uniform at
    the middle layer, the first layer whose median falls below ``ln|V|`` (and stays below), and the interior trend
    (:func:`interior_trend`)."""
    out: dict[str, float] = {"tokens": int(len(inner)), "ln_vocab": float(np.log(vocab_size)),
                             "unigram_entropy": unigram_entropy(targets) if len(targets) else np.nan}
    if not len(inner):
        return out
    n_layers = inner.shape[1]
    med = np.median(inner, axis=0)
    for name, layer in (("first", 0), ("mid", n_layers // 2), ("last", n_layers - 1)):
        q25, q50, q75 = np.quantile(inner[:, layer], [0.25, 0.5, 0.75])
        out |= {f"median_{name}": float(q50), f"q25_{name}": float(q25), f"q75_{name}": float(q75)}
    out["worse_than_uniform_mid_pct"] = 100 * float(np.mean(inner[:, n_layers // 2] > out["ln_vocab"]))
    below = med < out["ln_vocab"]
    stays = [layer for layer in range(n_layers) if below[layer:].all()]
    out["first_layer_below_uniform"] = float(stays[0]) if stays else np.nan
    out["last_k_below_uniform"] = float(n_layers - stays[0]) if stays else 0.0
    return out | interior_trend(inner, groups, n_boot, seed)


FLAT = 0.05  # |tau| below which an interior trend counts as flat (the equivalence margin)


def trend_verdict(tau_lo: float, tau_hi: float, diff_lo: float = np.nan, diff_hi: float = np.nan) -> str:
    """Claim 1's rule from the interior tau's 95% interval and the interval of the paired difference from the
    untrained twin on the same tokens (model - twin; NaN where there is none): "falls across layers" when the
    tau interval lies below 0 and the difference's below 0 too (the fall is more than the untrained network's);
    "rises across layers" the mirror image; "flat" when the tau interval lies within +-:data:`FLAT`; "falls, no
    more than the untrained twin" / "rises, no more than ..." when the tau interval excludes 0 but the
    difference's does not; else "no clear trend"."""
    if np.isnan(tau_lo):
        return "no interior layers"
    twin = not np.isnan(diff_lo)
    if tau_hi < 0:
        return "falls across layers" if not twin or diff_hi < 0 else "falls, no more than the untrained twin"
    if tau_lo > 0:
        return "rises across layers" if not twin or diff_lo > 0 else "rises, no more than the untrained twin"
    if -FLAT <= tau_lo and tau_hi <= FLAT:
        return "flat"
    return "no clear trend"


def uniform_text(last_k: float) -> str:
    """The statement beside the verdict: in how many last layers the median inner loss beats a uniform guess."""
    return f"below ln|V| in the last {int(last_k)} layer{'s' if last_k != 1 else ''}"


def _calibrated_tokens(records: dict[str, np.ndarray], min_position: int) -> np.ndarray:
    """The tokens :func:`sample_calibration` reads: a target, the position, a finite inner loss at every layer
    and, where the run sampled its lens, in that sample."""
    keep = ((records["target"] >= 0) & (records["position"] >= min_position)
            & np.isfinite(records["inner_loss"]).all(axis=1))
    if "lens_sampled" in records:
        keep &= records["lens_sampled"]
    return keep


def paired_trend_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray], min_position: int,
                            n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Mean per-token interior tau of run ``a`` minus run ``b`` on the tokens both calibrate (the same texts and
    positions), with a 95% cluster-bootstrap interval over texts (``tau_diff``, ``_lo``, ``_hi``); NaN without
    inner losses, fewer than 4 layers or shared tokens."""
    nan = {"tau_diff": np.nan, "tau_diff_lo": np.nan, "tau_diff_hi": np.nan}
    if "inner_loss" not in a or "inner_loss" not in b or a["inner_loss"].shape[1] < 4:
        return nan
    keep = _calibrated_tokens(a, min_position) & _calibrated_tokens(b, min_position)
    if not keep.any():
        return nan
    d = kendall_tau_rows(a["inner_loss"][keep][:, 1:-1]) - kendall_tau_rows(b["inner_loss"][keep][:, 1:-1])
    lo, hi = cluster_bootstrap({"d": d}, a["text_id"][keep], n_boot, seed=seed)["d"]
    return {"tau_diff": float(d.mean()), "tau_diff_lo": lo / 100, "tau_diff_hi": hi / 100}


def sample_calibration(records: dict[str, np.ndarray], min_position: int, vocab_size: int, n_boot: int = 1000,
                       seed: int = 0) -> dict[str, float]:
    """:func:`calibration` of a run's records on its seeded "all tokens" sample of the inner loss (``lens_sampled``;
    every token with a lens when the run has no sample); {} without an inner loss."""
    if "inner_loss" not in records:
        return {}
    keep = _calibrated_tokens(records, min_position)
    return calibration(records["inner_loss"][keep], records["text_id"][keep], records["target"][keep], vocab_size,
                       n_boot, seed)
