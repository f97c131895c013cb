"""Tables of the powered descent test and the line search (notebook 07, part 2), from the records of
:mod:`helpers.experiments.descent_powered`. Every share and mean has a 95% interval that resamples texts; every
verdict is two-sided (descends / ascends / not distinguishable) with Holm's correction over its family of tests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.stats.descent import holm, mean_test, share_test, verdict

GRADIENTS = ("inner", "true")
STEPS = ("block", "attn", "ffn")
THIRDS = ("first", "middle", "last")
TWIN = "untrained twin"


def paired(rec: pd.DataFrame, column: str) -> pd.DataFrame:
    """Trained model (``a``) and twin (``b``) values of ``column`` side by side on the same (token, layer), with
    the text cluster."""
    keys = ["model", "dataset", "text", "position", "layer"]
    a = rec[rec["weights"] == "trained"].set_index(keys)[column]
    b = rec[rec["weights"] == TWIN].set_index(keys)[column]
    both = pd.concat({"a": a, "b": b}, axis=1).dropna().reset_index()
    both["cluster"] = both["dataset"] + ":" + both["text"].astype(str)
    return both


def powered_by_third(rec: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """Per model, weights, gradient (``inner``, ``true``; controls ``*_rand``, ``*_argmax``), step and third (the
    predictor layer L-1 left out): % descent directions, 95% interval, p against 50%, Holm-adjusted p over
    model x third x step within each (weights, gradient), the verdict, and for trained models the paired
    difference from the twin on the same tokens."""
    rows = []
    kinds = [*GRADIENTS, *(f"{g}_{c}" for g in GRADIENTS for c in ("rand", "argmax"))]
    for (model, weights), d in rec[rec["third"] != "predictor"].groupby(["model", "weights"], sort=False):
        for kind in kinds:
            for step in STEPS:
                col = f"desc_{kind}_{step}"
                if col not in d or d[col].isna().all():
                    continue
                for third in THIRDS:
                    part = d[(d["third"] == third) & d[col].notna()]
                    if part.empty:
                        continue
                    test = share_test(part[col].to_numpy(), part["cluster"].to_numpy(), n_boot)
                    rows.append({"model": model, "weights": weights, "gradient": kind, "step": step,
                                 "third": third, "layers": f"{part['layer'].min()}-{part['layer'].max()}",
                                 "n_tokens": part["cluster"].size // max(1, part["layer"].nunique()),
                                 "n_texts": part["cluster"].nunique(), "descent_pct": test["share"],
                                 "ci_lo": test["lo"], "ci_hi": test["hi"], "p": test["p"]})
    out = pd.DataFrame(rows)
    out["p_holm"] = np.nan
    for _, idx in out.groupby(["weights", "gradient"]).groups.items():
        out.loc[idx, "p_holm"] = holm(out.loc[idx, "p"].to_numpy())
    out["verdict"] = [verdict(s, p) for s, p in zip(out["descent_pct"], out["p_holm"], strict=True)]
    return _with_twin_difference(rec, out, n_boot)


def _with_twin_difference(rec: pd.DataFrame, out: pd.DataFrame, n_boot: int) -> pd.DataFrame:
    """Trained-minus-twin difference (percentage points) of each trained row's descent share, paired on tokens."""
    diffs = []
    for r in out.itertuples():
        part = pd.DataFrame()
        if r.weights == "trained":
            scope = rec[(rec["third"] == r.third) & (rec["model"] == r.model)]
            part = paired(scope, f"desc_{r.gradient}_{r.step}")
        if part.empty:
            diffs.append((np.nan, np.nan, np.nan))
            continue
        test = mean_test(100 * (part["a"] - part["b"]).to_numpy(), part["cluster"].to_numpy(), n_boot)
        diffs.append((test["mean"], test["lo"], test["hi"]))
    out[["minus_twin_pp", "minus_twin_lo", "minus_twin_hi"]] = diffs
    return out


def powered_by_layer(rec: pd.DataFrame, n_boot: int = 200) -> pd.DataFrame:
    """Per model, weights, gradient (``inner``, ``true``), step and layer: % descent with a 95% interval (the
    per-layer figure), and the median cos(dz, -g)."""
    rows = []
    for (model, weights, layer), d in rec.groupby(["model", "weights", "layer"], sort=True):
        for kind in GRADIENTS:
            for step in STEPS:
                col = f"desc_{kind}_{step}"
                if col not in d or d[col].isna().all():
                    continue
                test = share_test(d[col].to_numpy(), d["cluster"].to_numpy(), n_boot)
                rows.append({"model": model, "weights": weights, "gradient": kind, "step": step, "layer": layer,
                             "third": d["third"].iloc[0], "n_tokens": len(d), "descent_pct": test["share"],
                             "ci_lo": test["lo"], "ci_hi": test["hi"],
                             "cos_median": float(d[f"cos_{kind}_{step}"].median())})
    return pd.DataFrame(rows)


def gradient_agreement(rec: pd.DataFrame, n_boot: int = 200) -> pd.DataFrame:
    """Per model, weights and layer: cos(g_inner, g_true) at the block's input, median and the mean with a 95%
    interval: does the paper's inner loss point where the model's own loss does?"""
    rows = []
    for (model, weights, layer), d in rec.groupby(["model", "weights", "layer"], sort=True):
        test = mean_test(d["cos_grads"].to_numpy(), d["cluster"].to_numpy(), n_boot)
        rows.append({"model": model, "weights": weights, "layer": layer, "third": d["third"].iloc[0],
                     "n_tokens": len(d), "cos_median": float(d["cos_grads"].median()), "cos_mean": test["mean"],
                     "ci_lo": test["lo"], "ci_hi": test["hi"]})
    return pd.DataFrame(rows)


def _alphas(rec: pd.DataFrame, prefix: str) -> list[float]:
    return sorted(float(c[len(prefix):]) for c in rec.columns if c.startswith(prefix))


def line_search(rec: pd.DataFrame, n_boot: int = 200) -> pd.DataFrame:
    """Per model, weights, reading (``a`` the Eq. 14 predictor, ``b`` the rest of the real network), step and
    layer: mean loss at each alpha minus the loss at alpha = 1, the removal effect loss(0) - loss(1) with a 95%
    interval, the best alpha of the mean curve, and the verdict: 'descent step' when removing the update raises
    the loss (interval above 0) and no other alpha is lower than alpha = 1 (no interval wholly below 0);
    'helps, alpha=x better' when removal raises the loss but another scale is lower; otherwise 'not a descent
    step' (removal does not raise the loss)."""
    rows = []
    line = rec[rec["line"].astype(bool)]
    for way in ("a", "b"):
        for step in STEPS:
            prefix = f"{way}_{step}_"
            alphas = _alphas(line, prefix)
            if 1.0 not in alphas or 0.0 not in alphas:
                continue
            for (model, weights, layer), d in line.groupby(["model", "weights", "layer"], sort=True):
                if d[f"{prefix}1"].isna().all():
                    continue
                base = d[f"{prefix}1"].to_numpy()
                row = {"model": model, "weights": weights, "reading": way, "step": step, "layer": layer,
                       "third": d["third"].iloc[0], "n_tokens": len(d)}
                better = []
                for a in alphas:
                    if a == 1.0:
                        continue
                    test = mean_test(d[f"{prefix}{a:g}"].to_numpy() - base, d["cluster"].to_numpy(), n_boot)
                    row[f"d_{a:g}"] = test["mean"]
                    if a == 0.0:
                        row.update(removal=test["mean"], removal_lo=test["lo"], removal_hi=test["hi"])
                    elif test["hi"] < 0:
                        better.append((test["mean"], a))
                means = {a: float(d[f"{prefix}{a:g}"].mean()) for a in alphas}
                row["best_alpha"] = min(means, key=means.get)
                row["verdict"] = ("not a descent step" if row["removal_lo"] <= 0 else
                                  f"helps, alpha={min(better)[1]:g} better" if better else "descent step")
                rows.append(row)
    return pd.DataFrame(rows)


def line_search_by_third(table: pd.DataFrame) -> pd.DataFrame:
    """Per model, weights, reading, step and third (predictor layer apart): layers, how many are 'descent step',
    the median removal effect and the most common best alpha."""
    rows = []
    for keys, d in table.groupby(["model", "weights", "reading", "step", "third"], sort=False):
        rows.append(dict(zip(("model", "weights", "reading", "step", "third"), keys, strict=True)) | {
            "layers": len(d), "descent_step_layers": int((d["verdict"] == "descent step").sum()),
            "not_descent_layers": int((d["verdict"] == "not a descent step").sum()),
            "removal_median": float(d["removal"].median()), "best_alpha_mode": float(d["best_alpha"].mode().iloc[0])})
    return pd.DataFrame(rows)
