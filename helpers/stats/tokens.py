"""Statistics of per-token run records: Table 1 rows per token variant (with cluster-bootstrap CIs), the norm
trajectories over layers 0..L-1, per-step transition rates, and inner-loss curves per layer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.config import MAX_FINAL_LOSS
from helpers.stats.intervals import bootstrap_ci, ci_text
from helpers.stats.monotone import monotone_stats, transition_rates

# the two token filters of the inner-loss tables
PAPER_FILTER, ALL_TOKENS = "final loss <= 1 (paper)", "all tokens"


def loss_curves(
    records: dict[str, np.ndarray], max_final_loss: float | None = MAX_FINAL_LOSS
) -> pd.DataFrame:
    """Mean, std, median and quantiles (10, 25, 75, 90%) per layer of the inner loss (Eq. 14) and the logit lens.

    Rows: one per (lens, layer). ``max_final_loss`` keeps tokens whose final loss is <= it (the
    paper's filter); None stands for every token with a target: all of them, or, when the lens ran on a
    seeded random share only (``lens_sampled`` in the records), that share. When the lens ran on a seeded share of
    the filtered tokens only (``lens_filtered``), the filter keeps that share. ``share_kept`` is the fraction of
    tokens with a target that the row covers, ``share_passing`` the fraction the filter passes (the same unless a
    share of the filtered tokens got the lens).
    """
    has_target = records["target"] >= 0
    keep = has_target.copy()
    if max_final_loss is not None:
        keep &= records["final_loss"] <= max_final_loss
        passing = int(keep.sum())  # tokens the filter keeps, before a subsample of them gets the lens
        if "lens_filtered" in records:
            keep &= records["lens_filtered"]
    elif "lens_sampled" in records:
        keep &= records["lens_sampled"]
    passing = passing if max_final_loss is not None else int(keep.sum())
    rows = []
    for lens in ("inner_loss", "logit_lens"):
        if lens not in records:
            continue
        vals = records[lens][keep]
        for layer in range(vals.shape[1]):
            col = vals[:, layer]
            rows.append(
                {
                    "lens": lens,
                    "layer": layer,
                    "mean": float(col.mean()) if len(col) else np.nan,
                    "std": float(col.std()) if len(col) else np.nan,
                    "q10": float(np.quantile(col, 0.1)) if len(col) else np.nan,
                    "q25": float(np.quantile(col, 0.25)) if len(col) else np.nan,
                    "median": float(np.median(col)) if len(col) else np.nan,
                    "q75": float(np.quantile(col, 0.75)) if len(col) else np.nan,
                    "q90": float(np.quantile(col, 0.9)) if len(col) else np.nan,
                    "n_tokens": int(len(col)),
                    "share_kept": float(keep.sum() / max(1, has_target.sum())),
                    "share_passing": float(passing / max(1, has_target.sum())),
                }
            )
    return pd.DataFrame(rows)


def norm_trajectories(records: dict[str, np.ndarray], n_layers: int) -> np.ndarray:
    """Norms over layers 0..L-1 (the last block's output excluded, as in the paper) [N, L]."""
    return records["norms"][:, :n_layers]


def norm_variants(records: dict[str, np.ndarray], min_position: int) -> dict[str, np.ndarray]:
    """Boolean token masks for the Table 1 variants.

    The paper's protocol as we read it (every position >= ``min_position + 1``, 1-based: the paper states it for
    Sec. 5.2, not for Table 1), the same tokens restricted to the paper's loss filter (final loss <= 1, when the
    records have final losses), the last token of each text, and every position with and without position 0
    (which carries 'massive activations').
    """
    text = records["text_id"]
    pos = records["position"]
    last = np.zeros(len(text), dtype=bool)
    if len(text):
        ends = np.r_[np.nonzero(np.diff(text))[0], len(text) - 1]
        last[ends] = True
    variants = {f"positions >= {min_position + 1} (paper)": pos >= min_position}
    if "final_loss" in records:
        variants[f"positions >= {min_position + 1}, {PAPER_FILTER}"] = (
            (pos >= min_position) & (records["final_loss"] <= MAX_FINAL_LOSS))
    return variants | {
        "last token of each text": last,
        "all positions, with position 0": pos >= 0,
        "all positions, without position 0": pos >= 1,
    }


TOLERANCES = (0.01, 0.05)  # "approximately non-decreasing": a step may fall by this share of the norm


def table1(
    records: dict[str, np.ndarray],
    n_layers: int,
    min_position: int,
    model: str,
    dataset: str,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Our Table 1 rows per variant: sequence % and pair % (the per-step rate) with 95% intervals (cluster
    bootstrap, Wilson with the design effect where it degenerates: ``interval``), the depth-free per-step rate
    implied by the sequence level (``sequence_per_step_pct`` = sequence^(1/steps)), chance 2^-steps, and both
    levels when a step may fall by 1% or 5% of the norm (``*_tol1_pct``, ``*_tol5_pct``)."""
    rows = []
    for variant, mask in norm_variants(records, min_position).items():
        if not mask.any():
            continue
        st = norm_stats(records, n_layers, mask, n_boot=n_boot, seed=seed)
        rows.append(
            {
                "model": model,
                "dataset": dataset,
                "variant": variant,
                "n_tokens": st["n"],
                "n_texts": st["n_texts"],
                "steps": st["steps"],
                "sequence_pct": st["sequence_pct"],
                "sequence_ci95": ci_text(st["sequence_lo"], st["sequence_hi"]),
                "pair_pct": st["pair_pct"],
                "pair_ci95": ci_text(st["pair_lo"], st["pair_hi"]),
                "interval": st["interval"],
                "sequence_per_step_pct": st["sequence_per_step_pct"],
                "chance_pct": st["chance_pct"],
                **{k: st[k] for k in st if "_tol" in k},
            }
        )
    return pd.DataFrame(rows)


def norm_stats(records: dict[str, np.ndarray], n_layers: int, mask: np.ndarray, n_boot: int = 1000,
               seed: int = 0) -> dict[str, float]:
    """Table 1 numbers of the tokens in ``mask``: n, n_texts, steps, sequence/pair % with 95% bounds (``*_lo``,
    ``*_hi``; texts are the clusters; ``interval`` names the method), the per-step rate implied by the sequence
    level, chance %, and sequence/pair % at each of :data:`TOLERANCES` (``sequence_tol1_pct``, ...)."""
    traj = norm_trajectories(records, n_layers)[mask]
    stats = monotone_stats(traj)
    ci = bootstrap_ci(traj, groups=records["text_id"][mask], n_boot=n_boot, seed=seed)
    tol = {}
    for t in TOLERANCES:
        st = monotone_stats(traj, t)
        tol |= {f"sequence_tol{100 * t:g}_pct": st["sequence_pct"], f"pair_tol{100 * t:g}_pct": st["pair_pct"]}
    return {**stats, "n_texts": int(len(np.unique(records["text_id"][mask]))),
            "sequence_lo": ci["sequence_pct"][0], "sequence_hi": ci["sequence_pct"][1],
            "pair_lo": ci["pair_pct"][0], "pair_hi": ci["pair_pct"][1], "interval": ci["method"],
            "sequence_per_step_pct": 100 * (stats["sequence_pct"] / 100) ** (1 / max(1, stats["steps"])), **tol}


def transitions(records: dict[str, np.ndarray], n_layers: int, min_position: int) -> pd.DataFrame:
    """Per-step share (%) of trajectories whose norm does not decrease from layer l to l+1."""
    mask = records["position"] >= min_position
    rates = transition_rates(norm_trajectories(records, n_layers)[mask])
    return pd.DataFrame(
        {
            "step": [f"{i}->{i + 1}" for i in range(len(rates))],
            "layer": range(len(rates)),
            "non_decreasing_pct": rates,
        }
    )
