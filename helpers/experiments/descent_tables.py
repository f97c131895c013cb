"""Tables and the reading of the descent test (notebook 07), from the per-(token, layer) records of
:mod:`helpers.experiments.descent`: shares by layer and by layer third against the untrained twin and random
directions of the same norm, and which half-step produces the norm decreases.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.experiments.paper import PUBLISHED_GROWTH_GPT2XL

STEPS = ("block", "attn", "ffn")


def layer_thirds(n_layers: int) -> np.ndarray:
    """'first' / 'middle' / 'last' for layers 0..L-1 (``np.array_split`` into three parts)."""
    labels = np.empty(n_layers, dtype=object)
    for name, part in zip(("first", "middle", "last"), np.array_split(np.arange(n_layers), 3), strict=True):
        labels[part] = name
    return labels


def _pct(s: pd.Series) -> float:
    return float(100 * s.mean()) if s.notna().any() else float("nan")


def descent_by_layer(rec: pd.DataFrame) -> pd.DataFrame:
    """Per model, weights, step and layer: cos(dz, -g) quartiles, % descent directions, % steps lowering the
    inner loss, and the random baseline (same tokens, same norms)."""
    rows = []
    for (model, weights, layer), d in rec.groupby(["model", "weights", "layer"], sort=False):
        for step in STEPS:
            if f"cos_{step}" not in d or d[f"cos_{step}"].isna().all():
                continue
            c = d[f"cos_{step}"]
            rows.append({"model": model, "weights": weights, "step": step, "layer": layer, "n": len(d),
                         "cos_q25": c.quantile(0.25), "cos_median": c.median(), "cos_q75": c.quantile(0.75),
                         "descent_pct": _pct(d[f"descent_{step}"]), "lowers_pct": _pct(d[f"lowers_{step}"]),
                         "random_cos_median": d[f"rcos_{step}"].median(),
                         "random_descent_pct": _pct(d[f"rdescent_{step}"]),
                         "random_lowers_pct": _pct(d["rlowers_block"]) if step == "block" else float("nan")})
    return pd.DataFrame(rows)


def descent_by_third(rec: pd.DataFrame) -> pd.DataFrame:
    """Per model, step and layer third: % descent directions (and % steps lowering the loss) of the trained model,
    its untrained twin and random directions of the same norm on the trained model's tokens."""
    rows = []
    for (model, third), d in rec.groupby(["model", "third"], sort=False):
        t, u = d[d.weights == "trained"], d[d.weights != "trained"]
        for step in STEPS:
            if f"cos_{step}" not in d or d[f"cos_{step}"].isna().all():
                continue
            rows.append({"model": model, "step": step, "third": third,
                         "layers": f"{d.layer.min()}-{d.layer.max()}", "tokens": t.groupby(["dataset", "text"]).ngroups,
                         "descent_pct": _pct(t[f"descent_{step}"]), "twin_descent_pct": _pct(u[f"descent_{step}"]),
                         "random_descent_pct": _pct(t[f"rdescent_{step}"]),
                         "cos_median": t[f"cos_{step}"].median(), "twin_cos_median": u[f"cos_{step}"].median(),
                         "lowers_pct": _pct(t[f"lowers_{step}"]), "twin_lowers_pct": _pct(u[f"lowers_{step}"]),
                         "random_lowers_pct": _pct(t["rlowers_block"]) if step == "block" else float("nan")})
    out = pd.DataFrame(rows)
    models = list(dict.fromkeys(rec.model))  # the run's order
    rank = (out.model.map(models.index) * 10 + out.step.map(STEPS.index)) * 3 + out.third.map(
        ["first", "middle", "last"].index)
    return out.assign(_r=rank).sort_values("_r", kind="stable").drop(columns="_r").reset_index(drop=True)


def _norm_shares(d: pd.DataFrame) -> dict:
    mid = "norm_mid" in d and d.norm_mid.notna().any()
    return {"attn_decrease_pct": _pct(d.norm_mid < d.norm_in) if mid else np.nan,
            "ffn_decrease_pct": _pct(d.norm_out < d.norm_mid) if mid else np.nan,
            "block_decrease_pct": _pct(d.norm_out < d.norm_in)}


def norm_by_layer(rec: pd.DataFrame) -> pd.DataFrame:
    """Per model, weights and block: median norms before / between / after the half-steps, % of tokens whose
    norm the attention half-step, the FFN half-step and the whole block decrease, median growth ratio."""
    return pd.DataFrame([{"model": m, "weights": w, "layer": layer, "norm_in": d.norm_in.median(),
                          "norm_mid": d.get("norm_mid", pd.Series([np.nan])).median(), "norm_out": d.norm_out.median(),
                          **_norm_shares(d), "ratio_median": (d.norm_out / d.norm_in).median()}
                         for (m, w, layer), d in rec.groupby(["model", "weights", "layer"], sort=False)])


def norm_attribution(rec: pd.DataFrame) -> pd.DataFrame:
    """Which half-step produces the norm decreases, blocks 0..L-2 (the conjecture's layers 0..L-1): % of blocks
    that decrease ||z||, and of those the % whose attention / FFN half-step decreases it; the per-layer growth
    rate over blocks 1..L-2 (block 0's jump from the embeddings left out): the median over tokens of the
    geometric mean ratio, and the median per-block ratio, beside GPT2-XL's published ~1.045."""
    rows = []
    for (model, weights), d in rec.groupby(["model", "weights"], sort=False):
        d = d[d.layer < d.n_layers - 1]
        dec = _norm_shares(d[d.norm_out < d.norm_in])
        inner = d[d.layer > 0]
        logr = np.log(inner.norm_out / inner.norm_in).groupby([inner.dataset, inner.text]).mean()
        rows.append({"model": model, "weights": weights, "block_decrease_pct": _pct(d.norm_out < d.norm_in),
                     "decreases": int((d.norm_out < d.norm_in).sum()),
                     "of_which_attn_decreases_pct": dec["attn_decrease_pct"],
                     "of_which_ffn_decreases_pct": dec["ffn_decrease_pct"],
                     "attn_decrease_pct": _norm_shares(d)["attn_decrease_pct"],
                     "ffn_decrease_pct": _norm_shares(d)["ffn_decrease_pct"],
                     "growth_rate_median": float(np.exp(logr.median())),
                     "block_ratio_median": float((inner.norm_out / inner.norm_in).median()),
                     "published_GPT2-XL": PUBLISHED_GROWTH_GPT2XL})
    return pd.DataFrame(rows)


def _by_third(values: pd.Series) -> str:
    return " / ".join("n/a" if np.isnan(v) else f"{v:.0f}%" for v in values)


def reading(thirds: pd.DataFrame, attribution: pd.DataFrame) -> str:
    """The notebook's reading, rendered from the two summary tables (shares by layer third: first / middle / last)."""
    lines = ["**Reading (rendered from this run's numbers; shares by layer third, first / middle / last).**", ""]
    for model, t in thirds.groupby("model", sort=False):
        b = t[t.step == "block"]
        edge = (b.descent_pct - b[["twin_descent_pct", "random_descent_pct"]].max(axis=1)).mean()
        verdict = ("more often a descent direction than both baselines" if edge > 5 else
                   "no more often a descent direction than the baselines" if edge < 1 else
                   "marginally above the baselines")
        cos = b.cos_median.abs().max()
        lines.append(f"- **{model}** (~{b.tokens.iloc[0]} tokens): block updates are descent directions "
                     f"{_by_third(b.descent_pct)} (untrained twin {_by_third(b.twin_descent_pct)}, random directions "
                     f"{_by_third(b.random_descent_pct)}): {verdict} (mean margin {edge:+.0f} points). Median "
                     f"cos(dz, -g) stays within +-{cos:.3f}: " + ("the updates are nearly orthogonal to the gradient, "
                     "a descent direction in sign, far from a gradient step in direction." if cos < 0.2 else
                     "the updates lean visibly towards -g."))
        for step, name in (("attn", "attention"), ("ffn", "FFN")):
            s = t[t.step == step]
            if len(s):
                lines.append(f"  - {name} half-step: descent {_by_third(s.descent_pct)} (twin "
                             f"{_by_third(s.twin_descent_pct)}); lowers the inner loss {_by_third(s.lowers_pct)}.")
        lines.append(f"  - the block step lowers the inner loss {_by_third(b.lowers_pct)} (twin "
                     f"{_by_third(b.twin_lowers_pct)}; a random step of the same norm {_by_third(b.random_lowers_pct)};"
                     f" undefined after the last block).")
    for _, a in attribution.iterrows():
        if np.isnan(a.attn_decrease_pct):
            src = "no half-steps (parallel residual)"
        elif a.decreases == 0:
            src = "none to attribute"
        else:
            gap = a.of_which_attn_decreases_pct - a.of_which_ffn_decreases_pct
            who = "mostly the attention" if gap > 10 else "mostly the FFN" if gap < -10 else "both alike"
            src = (f"of those {a.decreases}, the attention half-step decreases it in "
                   f"{a.of_which_attn_decreases_pct:.0f}%, the FFN half-step in "
                   f"{a.of_which_ffn_decreases_pct:.0f}%: {who}")
        if not np.isnan(a.attn_decrease_pct):
            src += (f" (all half-steps of these blocks: attention decreases ||z|| in {a.attn_decrease_pct:.0f}%, "
                    f"the FFN in {a.ffn_decrease_pct:.0f}%)")
        lines.append(f"- Norm, {a.model} ({a.weights}): {a.block_decrease_pct:.1f}% of (token, block) pairs of "
                     f"blocks 0..L-2 decrease ||z||; {src}. Growth rate {a.growth_rate_median:.3f} per layer over "
                     f"blocks 1..L-2 (median over tokens; published GPT2-XL ~{PUBLISHED_GROWTH_GPT2XL}).")
    lines += ["", "50% and cos 0 are what a direction unrelated to the gradient gives (the random column checks it on "
              "the same tokens); the twin is what the architecture gives without training."]
    return "\n".join(lines)
