"""Tables of the powered descent test, the line search and the ablation (notebook 07, part 2), from the records
of :mod:`helpers.experiments.descent_slopes`. Every share and mean has an interval that resamples texts; every
verdict is two-sided (descends / ascends / not distinguishable). The verdicts of one model and gradient form one
family (its thirds x steps, fixed by the architecture: adding a model changes no other's verdicts), and their
intervals are Bonferroni-adjusted to that family, so a printed interval and its verdict always agree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.residual.descent_records import ABLATED, CONTROLS, SLOPES
from helpers.stats.descent import LEVEL, descent_verdict, mean_test, minimiser_interval, share_test

GRADIENTS = SLOPES  # inner (Eq. 14), true (start of the step), true_end (end of the step: a step-size test)
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
    """Per model, weights, gradient (``inner``, ``true``, ``true_end``; controls ``*_rand``, ``*_argmax``), step
    and third (the predictor layer L-1 left out): % descent directions with its interval at the family's adjusted
    level (``ci_level``: 95% over the family of the model's thirds x steps for that gradient), the p-value against
    50%, for trained models the paired difference from the twin on the same tokens (same level), and the verdict
    of :func:`helpers.stats.descent.descent_verdict` with its reason."""
    rows = []
    kinds = [*GRADIENTS, *(f"{g}_{c}" for g in GRADIENTS for c in CONTROLS)]
    for (model, weights), d in rec[rec["third"] != "predictor"].groupby(["model", "weights"], sort=False):
        for kind in kinds:
            cells = [(step, third, d[(d["third"] == third) & d[col].notna()])
                     for step in STEPS if (col := f"desc_{kind}_{step}") in d for third in THIRDS]
            cells = [c for c in cells if not c[2].empty]
            level = 1 - LEVEL / max(1, len(cells))
            for step, third, part in cells:
                col = f"desc_{kind}_{step}"
                test = share_test(part[col].to_numpy(), part["cluster"].to_numpy(), n_boot, level=level)
                rows.append({"model": model, "weights": weights, "gradient": kind, "step": step,
                             "third": third, "layers": f"{part['layer'].min()}-{part['layer'].max()}",
                             "n_tokens": part["cluster"].size // max(1, part["layer"].nunique()),
                             "n_texts": part["cluster"].nunique(), "descent_pct": test["share"],
                             "ci_lo": test["lo"], "ci_hi": test["hi"], "ci_level": level, "p": test["p"],
                             "family": len(cells)})
    out = _with_twin_difference(rec, pd.DataFrame(rows), n_boot)
    verdicts = [descent_verdict(r.descent_pct, r.ci_lo, r.ci_hi, r.minus_twin_lo, r.minus_twin_hi)
                for r in out.itertuples()]
    out["verdict"], out["reason"] = [v for v, _ in verdicts], [w for _, w in verdicts]
    return out


def _with_twin_difference(rec: pd.DataFrame, out: pd.DataFrame, n_boot: int) -> pd.DataFrame:
    """Trained-minus-twin difference (percentage points) of each trained row's descent share, paired on tokens,
    with its interval at the row's level."""
    diffs = []
    for r in out.itertuples():
        part = pd.DataFrame()
        if r.weights == "trained":
            scope = rec[(rec["third"] == r.third) & (rec["model"] == r.model)]
            part = paired(scope, f"desc_{r.gradient}_{r.step}")
        if part.empty:
            diffs.append((np.nan, np.nan, np.nan))
            continue
        test = mean_test(100 * (part["a"] - part["b"]).to_numpy(), part["cluster"].to_numpy(), n_boot,
                         level=r.ci_level)
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
                part = d[d[col].notna()]  # the start-of-step slope: the subset's tokens only
                test = share_test(part[col].to_numpy(), part["cluster"].to_numpy(), n_boot)
                rows.append({"model": model, "weights": weights, "gradient": kind, "step": step, "layer": layer,
                             "third": d["third"].iloc[0], "n_tokens": len(part), "descent_pct": test["share"],
                             "ci_lo": test["lo"], "ci_hi": test["hi"],
                             "cos_median": float(part[f"cos_{kind}_{step}"].median())})
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
    interval, the minimiser of the mean curve (the parabola through the lowest grid point and its neighbours)
    with its cluster-bootstrap interval, and the verdict: 'descent step' when removing the update raises the loss
    (interval above 0) and no other alpha is lower than alpha = 1 (no interval wholly below 0); 'helps, alpha=x
    better' when removal raises the loss but another scale is lower; otherwise 'not a descent step'."""
    rows = []
    line = rec[rec["line"].astype(bool)]
    for way in ("a", "b"):
        for step in STEPS:
            prefix = f"{way}_{step}_"
            alphas = _alphas(line, prefix)
            if 1.0 not in alphas or 0.0 not in alphas:
                continue
            for (model, weights, layer), d in line.groupby(["model", "weights", "layer"], sort=True):
                d = d[d[f"{prefix}1"].notna()]
                if d.empty:
                    continue
                base, groups = d[f"{prefix}1"].to_numpy(), d["cluster"].to_numpy()
                row = {"model": model, "weights": weights, "reading": way, "step": step, "layer": layer,
                       "third": d["third"].iloc[0], "n_tokens": len(d), "n_texts": d["cluster"].nunique()}
                better = []
                for a in alphas:
                    if a == 1.0:
                        continue
                    test = mean_test(d[f"{prefix}{a:g}"].to_numpy() - base, groups, n_boot)
                    row[f"d_{a:g}"] = test["mean"]
                    if a == 0.0:
                        row.update(removal=test["mean"], removal_lo=test["lo"], removal_hi=test["hi"])
                    elif test["hi"] < 0:
                        better.append((test["mean"], a))
                best = minimiser_interval(np.array(alphas), d[[f"{prefix}{a:g}" for a in alphas]].to_numpy(),
                                          groups, n_boot)
                row.update(best_alpha=best["alpha"], best_lo=best["lo"], best_hi=best["hi"])
                row["verdict"] = ("not a descent step" if row["removal_lo"] <= 0 else
                                  f"helps, alpha={min(better)[1]:g} better" if better else "descent step")
                rows.append(row)
    return pd.DataFrame(rows)


def line_search_by_third(table: pd.DataFrame) -> pd.DataFrame:
    """Per model, weights, reading, step and third (predictor layer apart): layers, how many are 'descent step',
    the median removal effect, the median minimiser and how many layers' minimiser intervals contain 1."""
    rows = []
    for keys, d in table.groupby(["model", "weights", "reading", "step", "third"], sort=False):
        rows.append(dict(zip(("model", "weights", "reading", "step", "third"), keys, strict=True)) | {
            "layers": len(d), "n_texts": int(d["n_texts"].min()),
            "descent_step_layers": int((d["verdict"] == "descent step").sum()),
            "not_descent_layers": int((d["verdict"] == "not a descent step").sum()),
            "removal_median": float(d["removal"].median()), "best_alpha_median": float(d["best_alpha"].median()),
            "best_contains_1": int(((d["best_lo"] <= 1) & (d["best_hi"] >= 1)).sum())})
    return pd.DataFrame(rows)


def ablation(rec: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """The causal test, per model, weights, reading, gradient, step, third (predictor layer apart) and component
    removed (``gradient``: the update's component along -g; ``random``: a random vector of that component's norm;
    ``orthogonal``: everything but the gradient component): the mean loss change (nats) with its 95% interval
    resampling texts; on ``gradient`` rows also the paired difference from ``random`` (gradient minus random) and
    the verdict: 'the gradient part does the work' when removing it costs more than removing a random part of
    the same norm (interval above 0), 'a random part costs as much' when the interval straddles 0, else 'removing
    the gradient part costs less'."""
    rows = []
    base = rec[rec["line"].astype(bool) & (rec["third"] != "predictor")]
    for way, kinds in (("a", ("inner", "true")), ("b", ("true",))):
        for kind in kinds:
            for step in STEPS:
                cols = {c: f"abl_{way}_{kind}_{step}_{c}" for c in ABLATED}
                if not all(c in base for c in cols.values()):
                    continue
                for (model, weights, third), d in base.groupby(["model", "weights", "third"], sort=False):
                    d = d[d[cols["gradient"]].notna()]
                    if d.empty:
                        continue
                    groups = d["cluster"].to_numpy()
                    contrast = mean_test((d[cols["gradient"]] - d[cols["random"]]).to_numpy(), groups, n_boot)
                    for comp, col in cols.items():
                        test = mean_test(d[col].to_numpy(), groups, n_boot)
                        row = {"model": model, "weights": weights, "reading": way, "gradient": kind, "step": step,
                               "third": third, "component": comp,
                               "n_tokens": len(d[["cluster", "position"]].drop_duplicates()),
                               "n_texts": d["cluster"].nunique(), "layers": d["layer"].nunique(),
                               "loss_change": test["mean"], "ci_lo": test["lo"], "ci_hi": test["hi"]}
                        if comp == "gradient":
                            row.update(minus_random=contrast["mean"], minus_random_lo=contrast["lo"],
                                       minus_random_hi=contrast["hi"],
                                       verdict="the gradient part does the work" if contrast["lo"] > 0 else
                                       "removing the gradient part costs less" if contrast["hi"] < 0 else
                                       "a random part costs as much")
                        rows.append(row)
    return pd.DataFrame(rows)
