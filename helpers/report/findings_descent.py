"""Claim 1b's reading from the powered descent test (notebook 07, part 2): the rules and the rendered verdicts."""

from __future__ import annotations

import pandas as pd

from helpers.stats.intervals import ci_text

POWERED_TITLE = ("**Claim 1b: each layer's update is a (transformed) gradient step** (Sec. 2; notebook 07, part 2: "
                 "the share of updates with <dz, g> < 0 for two gradients, with controls and a line search)")
RULE = ("Rule: a (model, third, sublayer) 'descends' when its share of descent directions (<dz, g> < 0) has its "
        "interval above 50%, lies at least 3 pp above it, and its paired difference from the untrained twin on the "
        "same tokens has its interval above 0; 'ascends' the mirror image; else 'not distinguishable' (the reason "
        "is given). Intervals resample texts and are Bonferroni-adjusted over the model's own family (its thirds x "
        "sublayers for one gradient), so a printed interval and its verdict agree and adding a model changes no "
        "other's verdict. 50% is what a direction unrelated to the gradient gives. Three slopes: 'inner' (Eq. 14 at "
        "the step's start), 'true' (the rest of the network at the step's start: the descent test) and 'true_end' "
        "(the same loss at the step's end, about 0 when the step size is tuned: a step-size test, not a descent test).")
LINE_RULE = ("Rule: a layer's update is a 'descent step' when removing it (alpha = 0) raises the loss, the 95% "
             "interval of loss(0) - loss(1) above 0, and no other alpha in {-1, -0.5, 0.5, 1.5, 2, 3, 4} has "
             "loss(alpha) - loss(1) with an interval wholly below 0. alpha* is the minimiser of the mean curve (a "
             "parabola through the lowest grid point and its neighbours) with a cluster-bootstrap interval. Reading "
             "(b) favours alpha = 1 by construction (the later layers were trained on the unscaled update), so (a) "
             "is the sharper test of the paper's claim.")
ABLATION_RULE = ("Rule: each update loses its component along -g ('gradient'), a random component of the same norm "
                 "('random'), or everything but the gradient component ('orthogonal'); the loss change is read by "
                 "the Eq. 14 predictor (a) and, for the true-loss gradient, by the rest of the network (b). 'The "
                 "gradient part does the work' when removing it costs more than removing the random part (paired "
                 "difference's 95% interval above 0); 'a random part costs as much' when that interval contains 0.")


def _third_text(d: pd.DataFrame) -> str:
    """Each third's share with its adjusted interval (level printed), the verdict and its reason, and the twin
    difference."""
    return "; ".join(f"{r.third} ({r.layers}) {r.descent_pct:.1f}% {ci_text(r.ci_lo, r.ci_hi)} "
                     f"({100 * r.ci_level:.1f}% interval) **{r.verdict}**" + (f" ({r.reason})" if isinstance(r.reason, str) and r.reason else "")
                     + (f", minus twin {r.minus_twin_pp:+.1f} pp {ci_text(r.minus_twin_lo, r.minus_twin_hi, sign=True)}"
                        if pd.notna(r.minus_twin_pp) else "") for r in d.itertuples())


def powered_reading(th: pd.DataFrame, lt: pd.DataFrame | None, ag: pd.DataFrame | None,
                    ab: pd.DataFrame | None = None) -> str:
    """The reading of the powered descent test (notebook 07, part 2) from its tables by third (``07_powered_thirds``),
    the line search by third (``07_line_search_thirds``), the gradient agreement (``07_gradient_agreement``) and
    the ablation (``07_ablation``): per trained model the verdicts by third with intervals, reasons and the twin
    difference, the controls, the agreement of the gradients, the line search and the ablation; both sides as
    they come out."""
    lt = lt if lt is not None else pd.DataFrame(columns=["model", "weights", "reading", "step", "third"])
    ag = ag if ag is not None else pd.DataFrame(columns=["model", "weights", "third"])
    ab = ab if ab is not None else pd.DataFrame(columns=["model", "weights", "component", "step", "reading", "gradient"])
    lines = [RULE, ""]
    for model, d in th[th.weights == "trained"].groupby("model", sort=False):
        lines.append(f"**{model}**")
        for kind, label in (("true", "true loss, start of the step"), ("inner", "Eq. 14 inner loss"),
                            ("true_end", "true loss, end of the step (step size)")):
            for step in ("block", "attn", "ffn"):
                part = d[(d.gradient == kind) & (d.step == step)]
                if not part.empty:
                    lines.append(f"- {label}, {step}: {_third_text(part)}")
        ctl = d[(d.step == "block") & d.gradient.isin(["true_rand", "true_argmax"])]
        if not ctl.empty:
            by = ctl.groupby("gradient")["descent_pct"].mean()
            lines.append(f"- controls (true-loss slope at the step's start, block, mean over thirds): random wrong "
                         f"target {by.get('true_rand', float('nan')):.1f}%, the model's own prediction "
                         f"{by.get('true_argmax', float('nan')):.1f}% (true target "
                         f"{d[(d.gradient == 'true') & (d.step == 'block')].descent_pct.mean():.1f}%)")
        a = ag[(ag.model == model) & (ag.weights == "trained") & (ag.third != "predictor")]
        if not a.empty:
            lines.append(f"- cos(g_inner, dL/dz_l) below the predictor layer: median over layers "
                         f"{a.cos_median.median():.2f} (range {a.cos_median.min():.2f} to {a.cos_median.max():.2f})")
        ls = lt[(lt.model == model) & (lt.weights == "trained") & (lt.third != "predictor")]
        for (reading, step), part in ls.groupby(["reading", "step"], sort=False):
            thirds = "; ".join(f"{r.third} {r.descent_step_layers}/{r.layers} (median removal {r.removal_median:+.3f} "
                               f"nats, median alpha* {r.best_alpha_median:.2f}, interval contains 1 in "
                               f"{r.best_contains_1}/{r.layers})" for r in part.itertuples())
            lines.append(f"- line search ({reading}), {step}: layers a descent step by third: {thirds}")
        g = ab[(ab.model == model) & (ab.weights == "trained") & (ab.component == "gradient") & (ab.step == "block")]
        for (reading, kind), part in g.groupby(["reading", "gradient"], sort=False):
            thirds = "; ".join(f"{r.third} gradient part {r.loss_change:+.3f} vs random {r.loss_change - r.minus_random:+.3f}"
                               f" nats, difference {r.minus_random:+.3f} {ci_text(r.minus_random_lo, r.minus_random_hi, 3, sign=True)}"
                               f" **{r.verdict}**" for r in part.itertuples())
            lines.append(f"- ablation ({reading}, {kind} gradient, block): {thirds}")
        lines.append("")
    return "\n".join(lines)


BRIEF_LEGEND = ("Claim 1b: whether the block updates point downhill, per third of the layers (the predictor layer "
                "apart), for the gradient of the Eq. 14 inner loss and for the model's true loss, both at the start of "
                "the step; 'descends' / 'ascends' when the share of descent directions is above / below 50% by at "
                "least 3 pp with a family-adjusted interval and beyond the untrained twin's (notebook 07 part 2), "
                "else 'not distinguishable'.")
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
