"""Claim 1b's reading from the powered descent test (notebook 07, part 2): the rules and the rendered verdicts."""

from __future__ import annotations

import pandas as pd

from helpers.stats.intervals import ci_text

POWERED_TITLE = ("**Claim 1b: each layer's update is a (transformed) gradient step** (Sec. 2; notebook 07, part 2: "
                 "the share of updates with <dz, g> < 0 for two gradients, with controls and a line search)")
RULE = ("Rule: a (model, third, sublayer) 'descends' when its share of descent directions is above 50% with a "
        "Holm-adjusted two-sided p < 0.05 (cluster-robust over texts; family: model x third x sublayer per "
        "gradient and weights), 'ascends' when below, else 'not distinguishable'. 50% is what a direction unrelated "
        "to the gradient gives; the untrained twin on the same tokens is the second null.")
LINE_RULE = ("Rule: a layer's update is a 'descent step' when removing it (alpha = 0) raises the loss, the 95% "
             "interval of loss(0) - loss(1) above 0, and no other alpha has loss(alpha) - loss(1) with an interval "
             "wholly below 0. Reading (b) favours alpha = 1 by construction (the later layers were trained on the "
             "unscaled update), so (a) is the sharper test of the paper's claim.")



def _third_text(d: pd.DataFrame) -> str:
    return "; ".join(f"{r.third} ({r.layers}) {r.descent_pct:.1f}% {ci_text(r.ci_lo, r.ci_hi)} **{r.verdict}**"
                     + (f", twin {r.minus_twin_pp:+.1f} pp {ci_text(r.minus_twin_lo, r.minus_twin_hi, sign=True)}"
                        if pd.notna(r.minus_twin_pp) else "") for r in d.itertuples())


def powered_reading(th: pd.DataFrame, lt: pd.DataFrame, ag: pd.DataFrame) -> str:
    """The reading of the powered descent test (notebook 07, part 2) from its tables by third (``07_powered_thirds``),
    the line search by third (``07_line_search_thirds``) and the gradient agreement (``07_gradient_agreement``):
    per trained model the verdicts by third with intervals and the twin difference, the controls, the agreement
    of the two gradients, and the line search; both sides as they come out."""
    lt = lt if lt is not None else pd.DataFrame(columns=["model", "weights", "reading", "step", "third"])
    ag = ag if ag is not None else pd.DataFrame(columns=["model", "weights", "third"])
    lines = [RULE, ""]
    for model, d in th[th.weights == "trained"].groupby("model", sort=False):
        lines.append(f"**{model}**")
        for kind, label in (("true", "true loss"), ("inner", "Eq. 14 inner loss")):
            for step in ("block", "attn", "ffn"):
                part = d[(d.gradient == kind) & (d.step == step)]
                if not part.empty:
                    lines.append(f"- {label}, {step}: {_third_text(part)}")
        ctl = d[(d.step == "block") & d.gradient.isin(["true_rand", "true_argmax"])]
        if not ctl.empty:
            by = ctl.groupby("gradient")["descent_pct"].mean()
            lines.append(f"- controls (true-loss gradient, block, mean over thirds): random wrong target "
                         f"{by.get('true_rand', float('nan')):.1f}%, the model's own prediction "
                         f"{by.get('true_argmax', float('nan')):.1f}% (true target "
                         f"{d[(d.gradient == 'true') & (d.step == 'block')].descent_pct.mean():.1f}%)")
        a = ag[(ag.model == model) & (ag.weights == "trained") & (ag.third != "predictor")]
        if not a.empty:
            lines.append(f"- cos(g_inner, g_true) below the predictor layer: median over layers "
                         f"{a.cos_median.median():.2f} (range {a.cos_median.min():.2f} to {a.cos_median.max():.2f})")
        ls = lt[(lt.model == model) & (lt.weights == "trained") & (lt.third != "predictor")]
        for (reading, step), part in ls.groupby(["reading", "step"], sort=False):
            thirds = "; ".join(f"{r.third} {r.descent_step_layers}/{r.layers} (median removal {r.removal_median:+.3f} "
                               f"nats, best alpha {r.best_alpha_mode:g})" for r in part.itertuples())
            lines.append(f"- line search ({reading}), {step}: layers a descent step by third: {thirds}")
        lines.append("")
    return "\n".join(lines)


BRIEF_LEGEND = ("Claim 1b: whether the block updates point downhill, per third of the layers (the predictor layer "
                "apart), for the gradient of the Eq. 14 inner loss and for the model's true loss; 'descends' / "
                "'ascends' when the share of descent directions is above / below 50% (Holm-adjusted, notebook 07 "
                "part 2), else 'not distinguishable'. The true-loss test takes its gradient at the end of each step, "
                "not at its start (a known defect, open in the tracker): there 'not distinguishable' is what a tuned "
                "step size gives and is not evidence against descent.")
_THIRDS = ("first", "middle", "last")


def _where(thirds: list[str]) -> str:
    """'in every third', 'in the first third', 'in the first and last thirds'."""
    if len(thirds) == len(_THIRDS):
        return "in every third"
    return f"in the {' and '.join(thirds)} third{'s' if len(thirds) > 1 else ''}"


def brief_cell(powered: pd.DataFrame | None, model: str) -> str:
    """README's Claim 1b cell for ``model`` in words: the block verdicts by third for the Eq. 14 gradient and the
    true loss's, e.g. 'Eq. 14: descends in the middle and last thirds, not distinguishable in the first third'
    ('-' if not run)."""
    if powered is None:
        return "-"
    d = powered[(powered.model == model) & (powered.weights == "trained") & (powered.step == "block")]
    cells = []
    for kind, label in (("inner", "Eq. 14"), ("true", "true loss")):
        part = d[d.gradient == kind].set_index("third").reindex(list(_THIRDS)).dropna(subset=["verdict"])
        if len(part):
            groups: dict[str, list[str]] = {}
            for third, verdict in part.verdict.items():
                groups.setdefault(verdict, []).append(third)
            cells.append(f"{label}: " + ", ".join(f"{v} {_where(t)}" for v, t in groups.items()))
    return "; ".join(cells) or "-"
