"""README findings, Claim 2 taken apart (notebook 09) and the 4-bit question (notebooks 08 and 09), rendered from
their tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.stats.intervals import ci_text

TRAINED = "trained"  # the role of a trained model in the cross-model and geometry tables


def cov_text(t: pd.Series) -> str:
    """The covariance-matched direction null of a rates row and the observed rate's paired difference from it."""
    if pd.isna(t.get("cov_pair_pct", np.nan)):
        return ""
    return (f"; covariance-matched null pair {t.cov_pair_pct:.1f}%, observed - it {t.vs_cov_pair_pp:+.1f} pp "
            f"{ci_text(t.vs_cov_pair_lo, t.vs_cov_pair_hi, sign=True)} ({t.verdict_pair_cov})")


def opposition_text(t: pd.Series) -> str:
    """What the numbers say of a trained model's update directions: does it keep the norm on fewer steps (its
    updates oppose the stream more) than an isotropic direction, a direction as unevenly spread as its own updates,
    and another token's update (same text, other text)?"""
    nulls = [("a random direction", t.null_pair_pct), ("a covariance-matched direction", t.get("cov_pair_pct", np.nan)),
             ("another token's update from the same text", t.same_pair_pct),
             ("another token's update from another text", t.other_pair_pct)]
    nulls = [(n, v) for n, v in nulls if pd.notna(v)]
    more = [n for n, v in nulls if t.pair_pct < v]
    less = [n for n, v in nulls if t.pair_pct >= v]
    text = f"Its own updates keep the norm on {t.pair_pct:.1f}% of steps"
    if more:
        text += f": they oppose the stream more than {', '.join(more)} would"
    if less:
        text += f"{';' if more else ':'} not more than {', '.join(less)} would"
    return text + " (point rates; the paired intervals of the two direction nulls are given beside them)."


def geometry_section(rates: pd.DataFrame, flips: pd.DataFrame | None) -> list[str]:
    """Claim 2 taken apart (notebook 09): on each trained model, the observed non-decrease rate against the
    direction-randomised null built from its own step sizes, with the swap nulls, the twins at several scales, and
    what a weight perturbation flips."""
    block = rates[rates.kind == "block"]
    lines = ["**Claim 2, what is learned and what is geometry** (notebook 09). A step keeps the norm exactly when "
             "cos(z, dz) >= -|dz|/(2|z|). The direction-randomised null keeps each step's |z| and |dz| and draws its "
             "direction at random (closed form); a sharper one draws it from the covariance of that step's updates "
             "over tokens (covariance-matched: as unevenly spread as the real updates, without their alignment with "
             "the stream); observed - null (paired, 95% cluster-bootstrap CI) is what the learned directions add. "
             "Rule: *above* / *below* a null when the interval excludes 0, else *not distinguishable*.", ""]
    for _, r in block[block.role == "trained"].iterrows():
        lines.append(f"- {r.model} ({int(r.steps)} steps, {int(r.n_tokens):,} tokens): pair {r.pair_pct:.1f}% vs. "
                     f"null {r.null_pair_pct:.1f}%, **{r.verdict_pair}** ({r.vs_null_pair_pp:+.1f} pp "
                     f"{ci_text(r.vs_null_pair_lo, r.vs_null_pair_hi, sign=True)}){cov_text(r)}; sequence "
                     f"{r.sequence_pct:.1f}% vs. {r.null_sequence_pct:.1f}%; another token's update (same text / other "
                     f"text): {r.same_pair_pct:.1f}% / {r.other_pair_pct:.1f}%. {opposition_text(r)}")
    twins = block[block.role.str.startswith("twin") & ~block.role.str.contains("round")]
    if len(twins):
        near = int(((twins.vs_null_pair_pp.abs() < 2) | twins.role.str.contains("zero")).sum())
        scaled = twins[~twins.role.str.contains("zero")]
        lines.append(f"- Untrained twins ({len(twins)} across models and initialisation scales): the closed form "
                     f"predicts the pair rate within 2 pp for {near} of {len(twins)}; their sequence level runs "
                     f"{scaled.sequence_pct.min():.1f}-{scaled.sequence_pct.max():.1f}% depending on the scale, and "
                     "zero-initialised output projections give 100% by construction (no update at all). A twin is a "
                     "null for one initialisation scale, not for 'the architecture'.")
    if flips is not None and len(flips):
        for _, f in flips[flips["compared with"] == "trained"].iterrows():
            lines.append(f"- {f.model}, {f.perturbation}: {f['step flips %']:.2f}% of steps and "
                         f"{f['sequence flips %']:.1f}% of sequence verdicts flip; "
                         f"{f['decreases smaller than that %']:.0f}% of its decreasing steps are smaller than the "
                         "median change the perturbation makes to a step.")
    return lines


def quantisation_section(quant: pd.DataFrame, tensors: pd.DataFrame | None, cross: pd.DataFrame | None,
                         flips: pd.DataFrame | None = None) -> list[str]:
    """How far GGUF rounding moves Table 1: measured directly on a real model whose 4-bit weights are rounded again
    with another scheme (notebook 09's flips, where there are any), and on a model whose fp32 weights exist (the
    project-trained one), with the tensor types each scheme used; the per-step flip rate scaled to each real
    model's depth is a union-bound ceiling, shown as such and beside the direct measurement that supersedes it."""
    worst = quant.loc[quant["sequence change (pp)"].abs().idxmax()]
    step = float(quant["step flips %"].max())
    used = ""
    if tensors is not None and len(tensors):
        used = " (" + "; ".join(f"{scheme}: " + ", ".join(f"{n} tensors {q}" for q, n in t.type.value_counts().items())
                                for scheme, t in tensors.groupby("scheme", sort=False)) + ")"
    real = [] if cross is None else list(cross[(cross.role == TRAINED) & (cross.group != "natural")].model.unique())
    exist = (f"All {len(real)} real models here ({', '.join(m.split('-Instruct')[0] for m in real)}) exist only as "
             "4-bit GGUF files." if real else "The real models here exist only as 4-bit GGUF files.")
    lines = [f"**Can the 4-bit models be trusted?** {exist}"]
    direct = pd.DataFrame() if flips is None else flips[(flips["compared with"] == TRAINED)
                                                        & (flips["sequence flips %"] > 0) & (flips.group != "natural")]
    steps_of = {} if cross is None else cross[cross.role == TRAINED].groupby("model").steps.first().to_dict()
    for _, f in direct.iterrows():
        bound = min(100.0, step * steps_of[f.model]) if f.model in steps_of else np.nan
        lines.append(f"  Measured directly on {f.model} (notebook 09, {int(f.tokens):,} WikiText-103 tokens): its 4-bit "
                     f"weights after a {f.perturbation} flip {f['sequence flips %']:.1f}% of its sequence verdicts and "
                     f"{f['step flips %']:.2f}% of its steps (sequence rate {f['sequence change (pp)']:+.2f} pp)"
                     + (f", against the {bound:.1f}% the union bound below allows it" if np.isfinite(bound) else "")
                     + ".")
    lines.append(f"  On the project-trained model's fp32 weights, rounding with the same schemes{used} moves its "
                 f"sequence-level rate by at most {worst['sequence change (pp)']:+.2f} pp ({worst.weights}, "
                 f"{worst.dataset}) and its pair level by at most {quant['pair change (pp)'].abs().max():.2f} pp; "
                 f"{quant['sequence flips %'].max():.2f}% of tokens flip their sequence verdict and {step:.3f}% of "
                 "single layer steps flip.")
    if cross is not None:
        ceiling = "a loose ceiling (the direct measurement above is well below it)" if len(direct) else "a ceiling"
        for model, t in cross[cross.role == TRAINED].groupby("model", sort=False):
            if len(direct) and model in set(direct.model):
                continue
            steps = int(t.steps.iloc[0])
            gap = t.get("vs_twin_sequence_pp", pd.Series(dtype=float)).dropna()
            gap_txt = (f", against a gap to its untrained twin of {gap.min():+.1f} to {gap.max():+.1f} pp"
                       if len(gap) else "")
            lines.append(f"  Scaled to {model}'s {steps} steps, at most {min(100.0, step * steps):.1f}% of its sequence "
                         f"verdicts would flip (union bound: {ceiling}){gap_txt}.")
    lines.append("  The fp32 weights of the real models are not available here, so this is what can be measured.")
    return lines + [""]
