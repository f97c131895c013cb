"""README findings, Claim 4: the training-dynamics experiments (notebook 06), rendered from their tables."""

from __future__ import annotations

import numpy as np
import pandas as pd


def dynamics_section(losses: pd.DataFrame | None, norms_nat: pd.DataFrame | None,
                     norms_syn: pd.DataFrame | None = None, vocab_size: int | None = None) -> list[str]:
    """Claim 4 (the v2 training experiments): over training, the outer loss falls and the inner loss falls across
    layers, read beside what training did to the first layer's inner loss and a uniform guess over the synthetic
    vocabulary (``vocab_size``); with the norm rate over training beside it."""
    lines = ["**Claim 4: training dynamics** (the paper's v2 experiments on synthetic tasks and natural text).", ""]
    if losses is not None and len(losses):
        first, last = losses.iloc[0], losses.iloc[-1]
        inner = [c for c in losses.columns if c.startswith("inner, layer")]
        down = int(np.sum(np.diff(last[inner].to_numpy(dtype=float)) <= 0))
        own = last["model's own loss (inner tokens)"]
        text = (f"- synthetic tasks: outer validation loss {first['outer, val']:.3f} -> {last['outer, val']:.3f} "
                f"over {int(last.epoch)} epochs; at the last epoch the inner loss goes "
                f"{last[inner[0]]:.3f} -> {last[inner[-1]]:.3f} over layers ({down} of {len(inner) - 1} steps "
                f"down), and its last layer equals the model's own loss ({last[inner[-1]]:.3f} vs {own:.3f}).")
        rose = last[inner[0]] > first[inner[0]]
        uniform = np.log(vocab_size) if vocab_size else np.nan
        text += (f" The fall across layers is not all descent: training {'raised' if rose else 'lowered'} layer "
                 f"0's inner loss ({first[inner[0]]:.3f} -> {last[inner[0]]:.3f})"
                 + (f", {'above' if last[inner[0]] > uniform else 'below'} a uniform guess over the "
                    f"{vocab_size} symbols (ln {vocab_size} = {uniform:.3f})" if vocab_size else "")
                 + ", so part of the drop is the first layer getting worse at predicting, not later layers "
                 "getting better." if rose else "")
        lines.append(text)
    if norms_nat is not None and len(norms_nat):
        t = norms_nat[norms_nat.tokens.str.startswith("position")].sort_values("epoch")
        a, b = t.iloc[0], t.iloc[-1]
        move = ("lowers" if b.sequence_pct < a.sequence_pct else "raises" if b.sequence_pct > a.sequence_pct
                else "does not change")
        before = (f"; at initialisation it is already {a.sequence_pct / a.chance_pct:.1f}x chance "
                  f"({a.chance_pct:.3g}%), so the growth is there before any learning"
                  if a.sequence_pct > 2 * a.chance_pct else "")
        lines.append(f"- natural text (validation windows): the sequence-level norm rate goes {a.sequence_pct:.1f}% at "
                     f"initialisation -> {b.sequence_pct:.1f}% after {int(b.step):,} steps (pair {a.pair_pct:.1f}% -> "
                     f"{b.pair_pct:.1f}%): training **{move}** it{before}.")
    if norms_syn is not None and len(norms_syn):
        t = norms_syn[norms_syn.tokens.str.startswith("position")].sort_values("epoch")
        peak = t.loc[t.sequence_pct.idxmax()]
        lines.append(f"- synthetic tasks (validation): the sequence-level norm rate goes {t.sequence_pct.iloc[0]:.1f}% at "
                     f"initialisation -> {peak.sequence_pct:.1f}% at epoch {int(peak.epoch)} -> "
                     f"{t.sequence_pct.iloc[-1]:.1f}% at epoch {int(t.epoch.iloc[-1])}: training first raises it and "
                     "then lowers it, so 'training lowers the rate' is not a general rule.")
    return lines
