"""The written reading of notebook 05, rendered from the numbers of the run (never typed by hand).

:func:`summary_markdown` lists per model and construction what the agreement table holds;
:func:`reading_markdown` states the findings (Table 2 analogue, scale of the surrogate, agreement with
the real block, option ablation, untrained control, Jacobian, what was checked), each sentence built
from the records, so that the text and the tables and figures of the same run cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from helpers.surrogates.constructions import OPTION_VARIANTS
from helpers.surrogates.report import agreement_table, analogue_rows, median_abs_log_error, table2


def _finite(values: Iterable[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _pct_span(values: Iterable[float]) -> str:
    """``"85%"`` or ``"65-90%"`` (rounded to whole percent); ``"n/a"`` without finite values."""
    vals = _finite(values)
    if not vals:
        return "n/a"
    lo, hi = f"{min(vals):.0f}", f"{max(vals):.0f}"
    return f"{lo}%" if lo == hi else f"{lo}-{hi}%"


def _num(v: float) -> str:
    """A ratio or error: three significant digits, powers of ten outside [0.01, 1000)."""
    if not math.isfinite(v):
        return "n/a"
    if v != 0 and not 0.01 <= abs(v) < 1000:
        mant, exp = f"{v:.1e}".split("e")
        return f"{mant}·10^{int(exp)}"
    return f"{v:.3g}"


def _span(values: Iterable[float]) -> str:
    vals = _finite(values)
    if not vals:
        return "n/a"
    lo, hi = _num(min(vals)), _num(max(vals))
    return lo if lo == hi else f"{lo} to {hi}"


def summary_markdown(agree: pd.DataFrame, models: Sequence[str], constructions: Sequence[str]) -> str:
    """One bullet per model label and construction: meets Proposition 1, real block grows, verdict agrees
    (per dataset), from :func:`~helpers.surrogates.report.agreement_table` (its index reset)."""
    def pct(g: pd.DataFrame, col: str) -> str:
        return ", ".join(f"{r['dataset']} {r[col]:.0f}%" for r in g.to_dict("records")) or "n/a"

    lines = []
    for label in models:
        for c in constructions:
            g = agree[(agree.model == label) & (agree.construction == c)]
            if len(g):
                lines.append(f"- **{label}**, {c}: meets Prop. 1 {pct(g, 'meets_%')}; real block grows "
                             f"{pct(g, 'real_grows_%')}; verdict agrees with the real block {pct(g, 'agree_%')}")
    return "\n".join(lines)


def _table2_sentence(analog: pd.DataFrame, trained: list[str]) -> str:
    t2 = table2(analog[analog.model.isin(trained)]).reset_index()
    verb = ("reproduces" if (t2.overall == 100).all() else
            "does not reproduce" if (t2.overall < 100).all() else "reproduces only in part")
    per_model = "; ".join(
        f"{label}: " + ", ".join(f"{c} {_pct_span(g.overall)}" for c, g in t2[t2.model == label].groupby("construction"))
        for label in trained if (t2.model == label).any())
    return (f"**Table 2.** The paper's 100% {verb} on the trained model(s): the analogue constructions meet "
            f"Proposition 1 for {_pct_span(t2.overall)} of the matrices per dataset ({per_model}). That is a statement "
            "about the surrogate only: the condition is on the Gram matrix W^T W (U orthogonal, so a = b and it restates "
            "||Wx|| >= ||x||), not on a Hessian, so whether Proposition 1 *explains* the growth is read from the "
            "surrogate's agreement with the real block below, not from this share.")


def _scale_sentence(analog: pd.DataFrame, agree: pd.DataFrame, label: str) -> str:
    g = analog[analog.model == label]
    log_err = np.log(g["ratio"]) - np.log(g["real_ratio"])
    med = float(np.median(log_err))
    rho = _span(agree[(agree.model == label) & agree.construction.isin(g.construction.unique())].spearman_ratio)
    direction = "overestimates" if med > 0 else "underestimates"
    return (f"On {label} the surrogate's ratio ||W z_n|| / ||z_n|| spans {_span(g.ratio)} where the real block changes "
            f"the norm by a factor {_span(g.real_ratio)} (Spearman correlation with the real ratio per dataset and "
            f"construction: {rho}); it {direction} the change by a median factor of {_num(math.exp(abs(med)))}.")


def _agreement_sentence(analog: pd.DataFrame, label: str) -> str:
    g = analog[analog.model == label]
    shrink = g[~g.real_grows]
    flagged = int((~shrink.meets).sum())
    return (f"Its verdict agrees with the real block for {100 * g.agrees.mean():.0f}% of the matrices, where the real "
            f"block grows {100 * g.real_grows.mean():.0f}% of the time; of the {len(shrink)} "
            f"{'matrix' if len(shrink) == 1 else 'matrices'} whose real block shrinks the norm, {flagged} "
            f"{'fails' if flagged == 1 else 'fail'} the condition.")


def _ablation_sentence(ablation: pd.DataFrame, label: str) -> str:
    g = ablation[ablation.model == label]
    paper, full = OPTION_VARIANTS[0].label(), OPTION_VARIANTS[-1].label()
    keys = ["sample", "layer", "construction"]
    base = g[g.options == paper].set_index(keys)["meets"]
    others = g[g.options != paper].join(base.rename("paper_meets"), on=keys)
    changed = int((others.meets != others.paper_meets).sum())
    return (f"Undoing every omission at once (layernorm, bias, scale, rotary) moves the median |log ratio error| of "
            f"{label} from {_num(median_abs_log_error(g[g.options == paper]))} to {_num(median_abs_log_error(g[g.options == full]))}; "
            f"over all option variants {changed} of {len(others)} verdicts differ from the paper's surrogate.")


def reading_markdown(records: pd.DataFrame, ablation: pd.DataFrame | None = None, controls: Sequence[str] = (),
                     names: Mapping[str, str] | None = None) -> str:
    """The reading of notebook 05 as Markdown, every number taken from ``records`` (rows of
    :func:`~helpers.surrogates.experiment.run_eigen_check`) and ``ablation`` (rows of
    :func:`~helpers.surrogates.experiment.option_ablation`). ``controls`` are the labels of randomly
    initialised controls, ``names`` maps labels to model names (to say whether GPT-2 (124M) was checked)."""
    analog = analogue_rows(records)
    agree = agreement_table(records).reset_index()
    labels = list(dict.fromkeys(records.model))
    trained = [m for m in labels if m not in controls and (analog.model == m).any()]
    paras = []
    if trained:
        paras.append(_table2_sentence(analog, trained))
        body = [f"{_scale_sentence(analog, agree, m)} {_agreement_sentence(analog, m)}" for m in trained]
        errors = [median_abs_log_error(analog[analog.model == m]) for m in trained]
        if (table2(analog[analog.model.isin(trained)]).overall == 100).all() and min(errors) > math.log(2):
            body.append("So the 100% reflects the surrogate's scale (off by more than a factor 2 in the median), not "
                        "evidence that the blocks are norm-increasing maps.")
        paras.append("**Scale and agreement** (analogue constructions). " + " ".join(body))
    if ablation is not None and len(ablation):
        paras.append("**Omissions.** " + " ".join(_ablation_sentence(ablation, m) for m in dict.fromkeys(ablation.model)))
    for label in controls:
        g = analog[analog.model == label]
        if len(g):
            per = table2(g).overall
            paras.append(f"**Untrained control.** {label} meets the condition for {_pct_span(per)} of the matrices "
                         f"(per dataset and construction) while its real blocks grow {100 * g.real_grows.mean():.0f}% "
                         "of the time.")
    jac = agree[agree.construction == "jacobian"]
    if len(jac):
        parts = []
        for label in [m for m in labels if (jac.model == m).any()]:
            g = records[(records.model == label) & (records.construction == "jacobian")]
            parts.append(f"{label}: median |log ratio error| {_num(median_abs_log_error(g))}, verdict agrees with the real "
                         f"block {_pct_span(jac[jac.model == label]['agree_%'])} of the time")
        paras.append("**Exact Jacobian** (agreement table only: in a pre-norm block J z_n ~ z_n by construction, so its "
                      "Proposition 1 verdict is no analogue of Table 2). " + "; ".join(parts) + ".")
    n_texts = int(records.groupby(["model", "dataset"])["sample"].nunique().max()) if len(records) else 0
    gpt2 = any(n == "gpt2" or n.endswith("/gpt2") for n in (names or {}).values())
    paras.append(f"**Checked here:** {'; '.join(labels)}; {n_texts} text(s) per dataset. The paper's GPT-2 (124M) "
                 + ("is among them." if gpt2 else "is not among them (notebook 05 loads it only from the local "
                    "Hugging Face cache; the run is offline)."))
    return "\n\n".join(paras)
