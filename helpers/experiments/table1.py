"""Notebook 03: Table 1 (Conjecture 4.1) for every dataset run with the untrained twin's row and the paper's
rows beside ours, per-step transition rates, and the reading rendered from the numbers.
"""

from __future__ import annotations

import pandas as pd

from helpers.experiments.paper import PAPER_READING_NOTES, PAPER_TABLE1, with_paper_values
from helpers.stats.tokens import table1, transitions

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
        filt = table[(table.dataset == ds) & table.variant.str.contains("final loss", regex=False)]
        filt_txt = (f" On the paper's loss filter (final loss <= 1, {int(filt.n_tokens.iloc[0]):,} tokens): "
                    f"{filt.sequence_pct.iloc[0]:.1f}% {filt.sequence_ci95.iloc[0]} / {filt.pair_pct.iloc[0]:.1f}% "
                    f"{filt.pair_ci95.iloc[0]}." if len(filt) else "")
        tol_txt = (f" Allowing a step to fall by 1% (5%) of the norm: sequence {r.sequence_tol1_pct:.1f}% "
                   f"({r.sequence_tol5_pct:.1f}%)." if "sequence_tol1_pct" in r and pd.notna(r.sequence_tol1_pct)
                   else "")
        lines.append(
            f"- **{ds}** ({int(r.n_tokens):,} tokens, {int(r.n_texts)} texts, {int(r.steps)} steps): sequence level "
            f"{r.sequence_pct:.1f}% {r.sequence_ci95}, pair level {r.pair_pct:.1f}% {r.pair_ci95}"
            f" ({r.interval} interval); per step as implied by the sequence level, sequence^(1/{int(r.steps)}) = "
            f"{r.sequence_per_step_pct:.1f}%; chance 2^-{int(r.steps)} = {r.chance_pct:.1e}%{twin_txt}; paper "
            f"GPT-2 {gpt2.sequence_pct}/{gpt2.pair_pct}.{filt_txt}{tol_txt} Weakest steps: {worst_txt}.")
    return (f"**Reading ({label}).** The pair level is what Conjecture 4.1 predicts step by step; the sequence "
            "level compounds every step, so it is much stricter for a deep model (sequence^(1/n) puts models of "
            f"different depth on one per-step scale). {PAPER_READING_NOTES} Notebook 09 asks which part of these "
            "rates is learned direction and which is step size and geometry.\n" + "\n".join(lines))
