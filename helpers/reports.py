"""Turn per-token records into the paper's tables and curves, with its published values beside ours."""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.norms import bootstrap_ci, monotone_stats, transition_rates

# Table 1 of the paper (sequence %, pair %), every position >= 5.
PAPER_TABLE1 = pd.DataFrame(
    [
        ("GPT-2", "wikitext-103", 92.4, 99.3),
        ("GPT-2", "1bw", 83.2, 98.4),
        ("LLaMA-7B", "wikitext-103", 86.0, 98.2),
        ("LLaMA-7B", "1bw", 81.0, 98.7),
        ("LLaMA-13B", "wikitext-103", 79.8, 99.0),
        ("LLaMA-13B", "1bw", 73.4, 99.0),
    ],
    columns=["model", "dataset", "sequence_pct", "pair_pct"],
)
MAX_FINAL_LOSS = 1.0  # the paper keeps tokens whose final loss is <= 1 for Fig. 2/4


def provenance(model_line: str, dataset: str, n_texts: int, n_tokens: int, extra: str = "") -> str:
    """One line naming model, data, sample count and filter, for figure and table captions."""
    text = f"{model_line} | {dataset}: {n_texts} texts, {n_tokens} tokens"
    return f"{text} | {extra}" if extra else text


def loss_curves(
    records: dict[str, np.ndarray], max_final_loss: float | None = MAX_FINAL_LOSS
) -> pd.DataFrame:
    """Mean and std per layer of the inner loss (Eq. 14) and the logit lens.

    Rows: one per (lens, layer). ``max_final_loss`` keeps tokens whose final loss is <= it (the
    paper's filter; None = every token with a target). Column ``share_kept`` is the fraction kept.
    """
    has_target = records["target"] >= 0
    keep = has_target.copy()
    if max_final_loss is not None:
        keep &= records["final_loss"] <= max_final_loss
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
                    "n_tokens": int(len(col)),
                    "share_kept": float(keep.sum() / max(1, has_target.sum())),
                }
            )
    return pd.DataFrame(rows)


def norm_trajectories(records: dict[str, np.ndarray], n_layers: int) -> np.ndarray:
    """Norms over layers 0..L-1 (the last block's output excluded, as in the paper) [N, L]."""
    return records["norms"][:, :n_layers]


def norm_variants(records: dict[str, np.ndarray], min_position: int) -> dict[str, np.ndarray]:
    """Boolean token masks for the Table 1 variants.

    The paper's protocol (every position >= ``min_position + 1``, 1-based), the last token of each
    text, and every position with and without position 0 (which carries 'massive activations').
    """
    text = records["text_id"]
    pos = records["position"]
    last = np.zeros(len(text), dtype=bool)
    if len(text):
        ends = np.r_[np.nonzero(np.diff(text))[0], len(text) - 1]
        last[ends] = True
    return {
        f"positions >= {min_position + 1} (paper)": pos >= min_position,
        "last token of each text": last,
        "all positions, with position 0": pos >= 0,
        "all positions, without position 0": pos >= 1,
    }


def table1(
    records: dict[str, np.ndarray],
    n_layers: int,
    min_position: int,
    model: str,
    dataset: str,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Our Table 1 rows (sequence %, pair %, n, chance, 95% cluster-bootstrap CIs) per variant."""
    traj = norm_trajectories(records, n_layers)
    rows = []
    for variant, mask in norm_variants(records, min_position).items():
        if not mask.any():
            continue
        stats = monotone_stats(traj[mask])
        ci = bootstrap_ci(traj[mask], groups=records["text_id"][mask], n_boot=n_boot, seed=seed)
        rows.append(
            {
                "model": model,
                "dataset": dataset,
                "variant": variant,
                "n_tokens": stats["n"],
                "n_texts": int(len(np.unique(records["text_id"][mask]))),
                "steps": stats["steps"],
                "sequence_pct": stats["sequence_pct"],
                "sequence_ci95": f"[{ci['sequence_pct'][0]:.1f}, {ci['sequence_pct'][1]:.1f}]",
                "pair_pct": stats["pair_pct"],
                "pair_ci95": f"[{ci['pair_pct'][0]:.1f}, {ci['pair_pct'][1]:.1f}]",
                "chance_pct": stats["chance_pct"],
            }
        )
    return pd.DataFrame(rows)


def with_paper_values(ours: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Our rows followed by the paper's published Table 1 rows for the same dataset."""
    paper = PAPER_TABLE1[PAPER_TABLE1.dataset == dataset].assign(variant="paper (Table 1)")
    return pd.concat([ours, paper], ignore_index=True)


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
