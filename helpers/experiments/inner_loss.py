"""Notebook 02: the inner loss (Eq. 14) across layers, for the paper's filter (final loss <= 1) and for every
token, as tables and a reading rendered from the numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.config import MAX_FINAL_LOSS
from helpers.stats.tokens import ALL_TOKENS, PAPER_FILTER, loss_curves


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
