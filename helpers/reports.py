"""Turn per-token records into the paper's tables and curves, with its published values beside ours."""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.analysis import MAX_FINAL_LOSS
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


def provenance(model_line: str, dataset: str, n_texts: int, n_tokens: int, extra: str = "") -> str:
    """One line naming model, data, sample count and filter, for figure and table captions."""
    text = f"{model_line} | {dataset}: {n_texts} texts, {n_tokens} tokens"
    return f"{text} | {extra}" if extra else text


def loss_curves(
    records: dict[str, np.ndarray], max_final_loss: float | None = MAX_FINAL_LOSS
) -> pd.DataFrame:
    """Mean and std per layer of the inner loss (Eq. 14) and the logit lens.

    Rows: one per (lens, layer). ``max_final_loss`` keeps tokens whose final loss is <= it (the
    paper's filter); None stands for every token with a target: all of them, or, when the lens ran on a
    seeded random share only (``lens_sampled`` in the records), that share. ``share_kept`` is the fraction
    of tokens with a target that the row covers.
    """
    has_target = records["target"] >= 0
    keep = has_target.copy()
    if max_final_loss is not None:
        keep &= records["final_loss"] <= max_final_loss
    elif "lens_sampled" in records:
        keep &= records["lens_sampled"]
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
                    "q90": float(np.quantile(col, 0.9)) if len(col) else np.nan,
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
                "sequence_ci95": f"[{st['sequence_lo']:.1f}, {st['sequence_hi']:.1f}]",
                "pair_pct": st["pair_pct"],
                "pair_ci95": f"[{st['pair_lo']:.1f}, {st['pair_hi']:.1f}]",
                "chance_pct": st["chance_pct"],
            }
        )
    return pd.DataFrame(rows)


def norm_stats(records: dict[str, np.ndarray], n_layers: int, mask: np.ndarray, n_boot: int = 1000,
               seed: int = 0) -> dict[str, float]:
    """Table 1 numbers of the tokens in ``mask``: n, n_texts, steps, sequence/pair % with 95% cluster-bootstrap
    bounds (``*_lo``, ``*_hi``; texts are the clusters) and chance %."""
    traj = norm_trajectories(records, n_layers)[mask]
    stats = monotone_stats(traj)
    ci = bootstrap_ci(traj, groups=records["text_id"][mask], n_boot=n_boot, seed=seed)
    return {**stats, "n_texts": int(len(np.unique(records["text_id"][mask]))),
            "sequence_lo": ci["sequence_pct"][0], "sequence_hi": ci["sequence_pct"][1],
            "pair_lo": ci["pair_pct"][0], "pair_hi": ci["pair_pct"][1]}


# depth of the paper's models (their trajectories over layers 0..L-1 have L-1 steps)
PAPER_LAYERS = {"GPT-2": 12, "LLaMA-7B": 32, "LLaMA-13B": 40}


def with_paper_values(ours: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Our rows followed by the paper's published Table 1 rows for the same dataset (with their steps and chance)."""
    paper = PAPER_TABLE1[PAPER_TABLE1.dataset == dataset].assign(variant="paper (Table 1)")
    paper["steps"] = paper.model.map(PAPER_LAYERS) - 1
    paper["chance_pct"] = 100 * 2.0 ** -paper.steps.astype(float)
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


# ----------------------------------------------------------------------------------------------
# notebook-level tables and readings (02-04): built from DatasetRun objects, text rendered from numbers

PAPER_FILTER, ALL_TOKENS = "final loss <= 1 (paper)", "all tokens"


def inner_loss_table(runs: dict, label: str) -> pd.DataFrame:
    """:func:`loss_curves` for every dataset run and both token filters (the paper's and every token)."""
    parts = [loss_curves(run.records, filt).assign(dataset=ds, filter=name, model=label)
             for ds, run in runs.items() for filt, name in ((MAX_FINAL_LOSS, PAPER_FILTER), (None, ALL_TOKENS))]
    return pd.concat(parts, ignore_index=True)


def inner_loss_summary(curves: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, the filtered inner loss at the first and last layer, the share of layer steps that go
    down, the largest rise, and how many tokens the filter kept."""
    rows = []
    for ds, t in curves[(curves.lens == "inner_loss") & (curves["filter"] == PAPER_FILTER)].groupby("dataset"):
        m = t.sort_values("layer")["mean"].to_numpy()
        d = np.diff(m)
        worst = int(np.argmax(d)) if len(d) else 0
        rows.append({"dataset": ds, "first layer": m[0], "last layer": m[-1],
                     "decreasing steps %": 100 * float(np.mean(d <= 0)) if len(d) else np.nan,
                     "largest rise": f"{worst}->{worst + 1} (+{d[worst]:.2f})" if len(d) and d[worst] > 0 else "none",
                     "tokens kept": int(t.n_tokens.iloc[0]), "share kept %": 100 * float(t.share_kept.iloc[0])})
    return pd.DataFrame(rows)


def reading_inner_loss(summary: pd.DataFrame, curves: pd.DataFrame, label: str) -> str:
    """The reading of notebook 02, rendered from its numbers."""
    lines = []
    for _, r in summary.iterrows():
        t = curves[(curves.dataset == r["dataset"]) & (curves["filter"] == PAPER_FILTER)]
        inner = t[t.lens == "inner_loss"].set_index("layer")["mean"]
        logit = t[t.lens == "logit_lens"].set_index("layer")["mean"].reindex(inner.index)
        verdict = "falls" if r["last layer"] < r["first layer"] else "does not fall"
        logit_txt = (f" The logit lens is below the inner loss on {int((logit < inner).sum())} of {len(inner)} layers."
                     if logit.notna().any() else " (The logit lens was not computed in this run.)")
        lines.append(
            f"- **{r['dataset']}** ({r['tokens kept']:,} tokens with final loss <= 1, {r['share kept %']:.0f}% of "
            f"tokens): the inner loss {verdict} from {r['first layer']:.2f} at layer 0 to {r['last layer']:.2f} at "
            f"layer {len(inner) - 1}; {r['decreasing steps %']:.0f}% of layer steps go down (largest rise: "
            f"{r['largest rise']}).{logit_txt}")
    return (f"**Reading ({label}).** The paper reports a filtered inner loss that decreases across layers "
            "(clearly for LLaMA-7B/13B, less so for GPT-2).\n" + "\n".join(lines))


TWIN_VARIANT = "untrained twin (the null)"


def table1_with_paper(runs: dict, n_layers: int, min_position: int, label: str, n_boot: int = 1000,
                      seed: int = 0, twins: dict | None = None, twin_label: str = "") -> pd.DataFrame:
    """Our Table 1 rows for every dataset run, then the untrained twin's row at the paper's positions (when
    ``twins`` holds its run for that dataset), then the paper's rows for that dataset."""
    parts = []
    for ds, run in runs.items():
        ours = table1(run.records, n_layers, min_position, label, ds, n_boot=n_boot, seed=seed)
        if twins and ds in twins:
            twin = table1(twins[ds].records, n_layers, min_position, twin_label, ds, n_boot=n_boot, seed=seed)
            twin = twin[twin.variant == f"positions >= {min_position + 1} (paper)"].assign(variant=TWIN_VARIANT)
            ours = pd.concat([ours, twin], ignore_index=True)
        parts.append(with_paper_values(ours, ds))
    return pd.concat(parts, ignore_index=True)


def transitions_table(runs: dict, n_layers: int, min_position: int) -> pd.DataFrame:
    """:func:`transitions` for every dataset run."""
    return pd.concat([transitions(run.records, n_layers, min_position).assign(dataset=ds) for ds, run in runs.items()],
                     ignore_index=True)


def reading_table1(table: pd.DataFrame, trans: pd.DataFrame, min_position: int, label: str) -> str:
    """The reading of notebook 03, rendered from its numbers."""
    paper_variant = f"positions >= {min_position + 1} (paper)"
    lines = []
    for ds, t in table[table.variant == paper_variant].groupby("dataset"):
        r = t.iloc[0]
        gpt2 = PAPER_TABLE1[(PAPER_TABLE1.dataset == ds) & (PAPER_TABLE1.model == "GPT-2")].iloc[0]
        worst = trans[trans.dataset == ds].nsmallest(3, "non_decreasing_pct")
        worst_txt = ", ".join(f"{s} ({v:.0f}%)" for s, v in zip(worst.step, worst.non_decreasing_pct, strict=True))
        twin = table[(table.dataset == ds) & (table.variant == TWIN_VARIANT)]
        twin_txt = (f"; the untrained twin {twin.sequence_pct.iloc[0]:.1f}% {twin.sequence_ci95.iloc[0]} / "
                    f"{twin.pair_pct.iloc[0]:.1f}% {twin.pair_ci95.iloc[0]}" if len(twin) else "")
        lines.append(
            f"- **{ds}** ({int(r.n_tokens):,} tokens, {int(r.n_texts)} texts, {int(r.steps)} steps): sequence level "
            f"{r.sequence_pct:.1f}% {r.sequence_ci95}, pair level {r.pair_pct:.1f}% {r.pair_ci95}; chance "
            f"2^-{int(r.steps)} = {r.chance_pct:.1e}%{twin_txt}; paper GPT-2 {gpt2.sequence_pct}/{gpt2.pair_pct}. "
            f"Weakest steps: {worst_txt}.")
    return (f"**Reading ({label}).** The pair level is what Conjecture 4.1 predicts step by step; the sequence "
            "level compounds every step, so it is much stricter for a deep model.\n" + "\n".join(lines))


def reading_pca(explained: dict[str, np.ndarray], norm_growth: dict[str, float], n_layers: int) -> str:
    """The reading of notebook 04: explained variance of PC1-3 and the share of samples whose norm grows
    from layer 0 to layer L-1, per dataset."""
    lines = [f"- **{ds}**: PC1-3 explain " + ", ".join(f"{100 * v:.1f}%" for v in explained[ds])
             + f" of the variance; the norm at layer {n_layers - 1} exceeds the norm at layer 0 for "
             f"{100 * norm_growth[ds]:.0f}% of the samples." for ds in explained]
    return (f"**Reading.** Layers 0..{n_layers - 1} (the last block's output is left out, as in the paper's "
            "Sec. 5.3). Hover over a point for its layer.\n" + "\n".join(lines))
