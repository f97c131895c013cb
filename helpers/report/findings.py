"""README findings: one short section per claim of the paper, rendered from the tables in results/.

Every number comes from a CSV the notebooks wrote; a claim whose tables are missing says which notebook to
run. Verdicts follow fixed rules, stated next to them, so a change in the numbers changes the words.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from helpers.config import PROFILES
from helpers.paths import FIGURES_DIR
from helpers.report.findings_descent import BRIEF_LEGEND, POWERED_TITLE, brief_cell, powered_reading
from helpers.report.findings_geometry import TRAINED, geometry_section, quantisation_section
from helpers.report.findings_training import dynamics_section
from helpers.stats.agreement import AGREEMENT_RULE, agreement_verdict
from helpers.stats.inner import FLAT, trend_verdict, uniform_text
from helpers.stats.intervals import ci_text

PAPER_ROLE, TWIN, CHECKPOINT = "paper (Table 1)", "untrained twin", "checkpoint"


def _read(results: Path, name: str) -> pd.DataFrame | None:
    path = results / f"{name}.csv"
    return pd.read_csv(path) if path.is_file() else None


def _subjects(cross: pd.DataFrame) -> pd.DataFrame:
    """The rows a verdict is given for: trained models, and the project-trained model's last checkpoint."""
    ck = cross[cross.role == CHECKPOINT]
    last = ck[ck.epoch == ck.epoch.max()] if len(ck) else ck
    return pd.concat([cross[cross.role == TRAINED], last])


def _ci(r: pd.Series, stat: str) -> str:
    return f"{r[f'{stat}_pct']:.1f}% {ci_text(r[f'{stat}_lo'], r[f'{stat}_hi'])}"


def _twin_of(cross: pd.DataFrame, r: pd.Series) -> pd.DataFrame:
    return cross[(cross.group == r.group) & (cross.dataset == r.dataset)
                 & ((cross.role == TWIN) | ((cross.role == CHECKPOINT) & (cross.epoch == 0)))]


def claim1_verdict(r: pd.Series) -> str:
    """Claim 1's verdict of one cross-model row (:func:`helpers.stats.inner.trend_verdict`) with the paired
    difference from its twin where the row has one."""
    return trend_verdict(r.cal_tau_lo, r.cal_tau_hi, r.get("vs_twin_tau_lo", np.nan), r.get("vs_twin_tau_hi", np.nan))


def inner_loss_section(cross: pd.DataFrame) -> list[str]:
    """Claim 1: the inner loss (Eq. 14) falls across layers (Fig. 2/4), calibrated. Both ends are fixed by
    construction (the last layer *is* the final loss, layer 0 feeds the last block states it never sees), so the
    verdict is read on the interior layers of a seeded sample of all tokens: the per-token Kendall tau of the loss
    against the layer and its paired difference from the untrained twin (:func:`claim1_verdict`), beside ln|V|,
    the unigram entropy and the twin."""
    lines = ["**Claim 1: the inner loss falls across layers** (Eq. 14, Fig. 2/4; the paper shows curves, no number). "
             "Its last layer is the model's own loss and layer 0 feeds the last block states it never sees, so a "
             "fall from first to last layer is close to guaranteed. The verdict is read on the *interior* layers "
             "(1..L-2) of a seeded sample of all tokens. Rule: *falls across layers* when the mean per-token Kendall "
             "tau (loss vs. layer) has its 95% CI below 0 and its paired difference from the untrained twin on the "
             "same tokens (model - twin) has its 95% CI below 0 too; *rises across layers* the mirror image; *falls "
             "(rises), no more than the untrained twin* when only the first holds; *flat* when the tau CI lies within "
             f"+-{FLAT:g}; else *no clear trend*. Beside it: in how many last layers the median beats a uniform guess "
             "(ln|V|).", ""]
    for _, r in _subjects(cross).iterrows():
        if pd.isna(r.get("cal_tau", np.nan)):
            continue
        twin = _twin_of(cross, r)
        twin_tau = float(twin.cal_tau.iloc[0]) if len(twin) and "cal_tau" in twin else np.nan
        paired = (f"model - twin {r.vs_twin_tau:+.3f} [{r.vs_twin_tau_lo:+.3f}, {r.vs_twin_tau_hi:+.3f}]"
                  if pd.notna(r.get("vs_twin_tau", np.nan)) else
                  "no twin" if np.isnan(twin_tau) else f"twin {twin_tau:+.2f}, not paired")
        lines.append(
            f"- {r.model}, {r.dataset}: **{claim1_verdict(r)}** ({uniform_text(r.cal_last_k_below_uniform)}): "
            f"interior tau {r.cal_tau:+.2f} [{r.cal_tau_lo:+.2f}, {r.cal_tau_hi:+.2f}] ({paired}); median "
            f"{r.cal_median_first:.1f} -> {r.cal_median_mid:.1f} "
            f"-> {r.cal_median_last:.2f} nats (layer 0, middle, last) against ln|V| = {r.cal_ln_vocab:.1f} and a "
            f"unigram entropy of {r.cal_unigram_entropy:.1f}; {r.cal_worse_than_uniform_mid_pct:.0f}% of tokens do "
            f"worse than uniform at the middle layer ({int(r.cal_tokens):,} sampled tokens).")
    return lines


def _vs(r: pd.Series, stat: str) -> str:
    lo, hi = r.get(f"vs_twin_{stat}_lo", np.nan), r.get(f"vs_twin_{stat}_hi", np.nan)
    if pd.isna(lo):
        return "not compared with the twin"
    side = "above" if lo > 0 else "below" if hi < 0 else "not distinguishable from"
    return f"**{side}** the twin ({r[f'vs_twin_{stat}_pp']:+.1f} pp {ci_text(lo, hi, sign=True)})"


def norms_section(cross: pd.DataFrame) -> list[str]:
    """Claim 2 (Conjecture 4.1): norms of the current token do not decrease across layers. Verdicts against the
    right null, the untrained twin (paired difference on the same tokens, 95% cluster-bootstrap CI), beside the
    paper's rows of the same architecture (its LLaMA rows for a Llama model, else GPT-2) and chance."""
    lines = ["**Claim 2: the current token's norm does not decrease across layers** (Conjecture 4.1, Table 1). "
             "Sequence level: every step non-decreasing; pair level: single steps. The null is the untrained twin "
             "(same architecture, random initialisation, same tokens), not chance 2^-n: an untrained residual stream "
             "already grows. Verdicts use the paired difference model - twin and its 95% CI.", ""]
    paper = cross[cross.role == PAPER_ROLE].set_index(["model", "dataset"])
    subjects = _subjects(cross)
    if "vs_twin_sequence_hi" in subjects:
        compared = subjects.dropna(subset=["vs_twin_sequence_lo"])
        below = int((compared.vs_twin_sequence_hi < 0).sum())
        above = int((compared.vs_twin_sequence_lo > 0).sum())
        twins = subjects.twin_sequence_pct.dropna()
        if len(compared) and len(twins):
            lines += [f"In short: the untrained twins are {twins.min():.1f}-{twins.max():.1f}% sequence-level "
                      f"non-decreasing; of {len(compared)} trained (model, dataset) pairs, {below} are below their twin "
                      f"and {above} above it (95% CI of the paired difference). A twin's own rate is fixed by its width, "
                      "depth and initialisation scale (a random update direction keeps the norm when cos >= -|dz|/2|z|), "
                      "so 'below the twin' does not by itself say what training does to the update directions: the "
                      "next paragraph separates direction from step size on the trained models themselves.", ""]
    tuned = sorted({m for m in subjects.model if "Instruct" in str(m)})
    if tuned:
        lines += [f"Confounders: {', '.join(tuned)} are instruction fine-tunes (the Qwen models code-instruction), and "
                  "every registry model here is a 4-bit GGUF dequantised to float; the paper used full-precision base "
                  "models.", ""]
    for _, r in subjects.iterrows():
        refs = str(r.get("paper_refs")) if pd.notna(r.get("paper_refs", np.nan)) else "GPT-2"
        ref = "".join(f"paper {m} {paper.loc[key].sequence_pct:.1f}% / {paper.loc[key].pair_pct:.1f}%; "
                      for m in refs.split(";") if (key := (f"{m} (paper)", r.dataset)) in paper.index)
        twin = (f"untrained twin {r.twin_sequence_pct:.1f}% / {r.twin_pair_pct:.1f}%; "
                if pd.notna(r.get("twin_sequence_pct", np.nan)) else "")
        lines.append(
            f"- {r.model}, {r.dataset} ({int(r.layers)} layers): sequence {_ci(r, 'sequence')}, pair {_ci(r, 'pair')}; "
            f"{ref}{twin}chance {r.chance_pct:.3g}%. Sequence level {_vs(r, 'sequence')}, pair level {_vs(r, 'pair')}.")
    return lines


def table2_section(table2: pd.DataFrame, agreement: pd.DataFrame | None = None) -> list[str]:
    """Claim 3 (Proposition 1 / Table 2). The condition is on the Gram matrix of the surrogate's update (with U
    orthogonal, a = b and it restates |Wx| >= |x|), so meeting it is not evidence that the surrogate explains
    the real block; the verdict is the surrogate's agreement with the real block's norm change."""
    lines = ["**Claim 3: Proposition 1** (Table 2; paper GPT-2 100%). The condition is a Gram-matrix condition on "
             "the linear surrogate, not a Hessian one: with U orthogonal a = b and it restates |Wx| >= |x|, so "
             f"'100% meet it' says the surrogate grows, not that the real block does. Rule: {AGREEMENT_RULE}.", ""]
    for (model, construction), t in table2.groupby(["model", "construction"], sort=False):
        per = ", ".join(f"{d} {v:.0f}% (n={int(n)})" for d, v, n in zip(t.dataset, t.overall, t.n, strict=True))
        agree = "" if agreement is None else _agreement_text(agreement, model, construction)
        lines.append(f"- {model}, {construction}: condition met {per}{agree}.")
    return lines


def _agreement_text(agreement: pd.DataFrame, model: str, construction: str) -> str:
    a = agreement[(agreement.model == model) & (agreement.construction == construction)]
    if a.empty:
        return ""
    shrinks = a["real_shrinks"] if "real_shrinks" in a else pd.Series(0, index=a.index)
    verdicts = [agreement_verdict(r.spearman_ratio, r.median_abs_log_ratio_error,
                                  r["agree_when_real_shrinks_%"], int(n)) for (_, r), n in zip(a.iterrows(), shrinks,
                                                                                                  strict=True)]
    ok = all(v == "agrees" for v, _ in verdicts)
    why = "; ".join(sorted({w for _, w in verdicts if w}))

    def span(lo, hi, f):
        return (f.format(lo) if f.format(lo) == f.format(hi) else f"{f.format(lo)} to {f.format(hi)}")
    rho, err, shrink = a.spearman_ratio, a.median_abs_log_ratio_error, a["agree_when_real_shrinks_%"].dropna()
    right = (f"right on {span(shrink.min(), shrink.max(), '{:.0f}')}% of the steps where the real block shrinks the "
             "norm" if len(shrink) else "the real block never shrinks the norm here")
    return (f"; against the real block ({span(a.n.min(), a.n.max(), '{:.0f}')} steps per dataset): Spearman "
            f"{span(rho.min(), rho.max(), '{:+.2f}')}, median |log ratio error| {span(err.min(), err.max(), '{:.3f}')}, "
            f"{right}: **{'agrees' if ok else 'does not agree'}**" + (f" ({why})" if why else ""))


def descent_section(thirds: pd.DataFrame) -> list[str]:
    """Section 2's reading, tested directly (notebook 07): is each block's update a descent direction of the inner
    loss? Per model and third of the layers, against the untrained twin and random directions (both ~50%)."""
    lines = ["**Claim 1b: each layer's update is a (transformed) gradient step** (Sec. 2; tested directly in notebook "
             "07: share of block updates with <dz, g> < 0 for g the inner-loss gradient). Rule: a third of the layers "
             "*descends* when its share is >= 10 pp above both the untrained twin and random directions.", ""]
    for model, t in thirds[thirds.step == "block"].groupby("model", sort=False):
        parts = []
        for _, r in t.iterrows():
            ok = r.descent_pct >= max(r.twin_descent_pct, r.random_descent_pct) + 10
            parts.append(f"{r.third} ({r.layers}) {r.descent_pct:.0f}% vs twin {r.twin_descent_pct:.0f}% / random "
                         f"{r.random_descent_pct:.0f}%{' **descends**' if ok else ''}")
        lines.append(f"- {model}: " + "; ".join(parts) + f" ({int(t.tokens.iloc[0])} tokens, one per text).")
    return lines


def headline(cross: pd.DataFrame | None, rates: pd.DataFrame | None) -> list[str]:
    """The opening sentences of the findings, rendered from the cross-model table (notebook 08) and the geometry
    rates (notebook 09): the inner-loss verdicts, the norm rates against the paper and the twins, and which side of
    the direction-randomised null the trained models fall."""
    if cross is None:
        return []
    subjects = _subjects(cross)
    subjects = subjects[subjects.role == TRAINED]
    wt = subjects[subjects.dataset == "wikitext-103"] if (subjects.dataset == "wikitext-103").any() else subjects
    if wt.empty:
        return []
    verdicts = []
    for _, r in wt.iterrows():
        if pd.notna(r.get("cal_tau", np.nan)):
            verdicts.append(claim1_verdict(r))
    across = sum(v == "falls across layers" for v in verdicts)
    paper = cross[(cross.role == PAPER_ROLE) & (cross.dataset == wt.dataset.iloc[0])]
    twins = cross[(cross.role == TWIN) & (cross.dataset == wt.dataset.iloc[0])]
    size = (f" of {wt.params.min() / 1e6:,.0f}M-{wt.params.max() / 1e9:.1f}B parameters"
            if "params" in wt and wt.params.notna().any() else "")
    text = f"**In brief** ({wt.dataset.iloc[0]}, notebook 08's sample; {len(wt)} real models{size}). "
    if verdicts:
        others = pd.Series([v for v in verdicts if v != "falls across layers"]).value_counts()
        text += (f"Claim 1: the inner loss falls across the interior layers, beyond its untrained twin, for {across} "
                 f"of {len(verdicts)} models" + "".join(f"; {v} for {n}" for v, n in others.items()))
        if "cal_last_k_below_uniform" in wt:
            share = 100 * wt.cal_last_k_below_uniform / wt.layers
            text += (f", yet its median beats a uniform guess (ln|V|) only in the last {share.min():.0f}-"
                     f"{share.max():.0f}% of the layers")
        text += ". "
    text += (f"Claim 2: single steps keep the norm for {wt.pair_pct.min():.1f}-{wt.pair_pct.max():.1f}% of steps, but "
             f"the whole depth only for {wt.sequence_pct.min():.1f}-{wt.sequence_pct.max():.1f}% of tokens "
             f"(paper: {paper.sequence_pct.min():.1f}-{paper.sequence_pct.max():.1f}%)")
    text += (f", below untrained twins ({twins.sequence_pct.min():.1f}-{twins.sequence_pct.max():.1f}%)."
             if len(twins) else ".")
    if rates is not None and len(rates):
        block = rates[(rates.kind == "block") & (rates.role == "trained")]
        below = int((block.verdict_pair == "below the null").sum())
        above = int((block.verdict_pair == "above the null").sum())
        text += (f" Against isotropic random directions of the same step sizes (notebook 09), the trained models' "
                 f"updates keep the norm *less* often for {below} of {len(block)} and more often for {above}: they "
                 "oppose the stream more than a direction drawn at random.")
        if "verdict_pair_cov" in block:
            short = [("the project GPT-2 model" if g == "natural" else m.split("-Instruct")[0])
                     for m, g in zip(block.model, block.group, strict=True)]
            by = {v: [n for n, w in zip(short, block.verdict_pair_cov, strict=True) if w == v]
                  for v in ("below the null", "above the null", "not distinguishable")}
            words = {"below the null": "more", "above the null": "less", "not distinguishable": "no differently"}
            swap = [n for n, p, o in zip(short, block.pair_pct, block.other_pair_pct, strict=True) if p < o]
            text += (" Against directions as unevenly spread as their own updates (the covariance-matched null): "
                     + "; ".join(f"{', '.join(n)} {words[v]}" for v, n in by.items() if n)
                     + ". Against another text's update: " + (", ".join(swap) + " more" if swap else "none more")
                     + (". How much of the fall is learned alignment differs between models, and the isotropic null "
                        "alone overstates it." if len(by["below the null"]) < len(block) else "."))
    return [text, ""]


def brief(results: str | Path, figures: str | Path = FIGURES_DIR) -> str:
    """README's short findings: the 'In brief' paragraph, the headline figure, one line per claim and model with its
    verdict, and a link to the full findings (``docs/findings.md``, :func:`render`)."""
    results, figures = Path(results), Path(figures)
    cross, rates = _read(results, "08_cross_model"), _read(results, "09_geometry_rates")
    parts = ["### Findings", "", "Generated by `python -m helpers readme` from `results/`. Every claim with its rule, "
             "null, intervals and sample: [docs/findings.md](docs/findings.md); every table: "
             "[results/README.md](results/README.md).", ""]
    parts += headline(cross, rates)
    figure = figures / "08_scale_wikitext-103.png"
    if figure.is_file():
        parts += [f"![{figure.stem}](figures/{figure.name})", ""]
    if cross is not None:
        subjects = _subjects(cross)
        trained = subjects[subjects.role == TRAINED]
        wt = trained[trained.dataset == "wikitext-103"] if (trained.dataset == "wikitext-103").any() else trained
        ds = wt.dataset.iloc[0] if len(wt) else ""
        powered = _read(results, "07_powered_thirds")
        lines = [f"| model ({ds}) | Claim 1: inner loss | Claim 1b: descent | Claim 2: sequence % (twin) | "
                 "vs. random directions |", "|---|---|---|---|---|"]
        for _, r in wt.iterrows():
            v1 = claim1_verdict(r) if pd.notna(r.get("cal_tau", np.nan)) else "-"
            seq = f"{r.sequence_pct:.1f} ({r.twin_sequence_pct:.1f})" if pd.notna(r.get("twin_sequence_pct")) else (
                f"{r.sequence_pct:.1f}")
            geo = "-"
            if rates is not None:
                g = rates[(rates.model == r.model) & (rates.role == "trained") & (rates.kind == "block")]
                geo = f"{g.verdict_pair.iloc[0]} ({g.vs_null_pair_pp.iloc[0]:+.1f} pp)" if len(g) else "-"
            lines.append(f"| {r.model} | {v1} | {brief_cell(powered, r.model)} | {seq} | {geo} |")
        parts += lines + ["", BRIEF_LEGEND, ""] + samples_table(results, cross)
    return "\n".join(parts).rstrip() + "\n"


def samples_table(results: Path, cross: pd.DataFrame | None, dataset: str = "wikitext-103") -> list[str]:
    """Claim 2's numbers of each model on every sample that ran (notebook 08's shared sample, notebook 03's own
    sample per profile), so the headline and the larger samples can be read side by side."""
    rows = []
    if cross is not None:
        for _, r in cross[(cross.role == TRAINED) & (cross.dataset == dataset)].iterrows():
            rows.append((r.model, "notebook 08 (shared sample, default)", r.n_tokens, _ci(r, "sequence"), _ci(r, "pair")))
    for path in sorted(results.glob("03_table1_*.csv")):
        t = pd.read_csv(path)
        t = t[(t.dataset == dataset) & t.variant.astype(str).str.fullmatch(r"positions >= \d+ \(paper\)")]
        profile = "paper" if path.stem.endswith("_paper") else "default"
        for _, r in t.iterrows():
            rows.append((r.model, f"notebook 03 (own sample, {profile})", r.n_tokens,
                         f"{r.sequence_pct:.1f}% {r.sequence_ci95}", f"{r.pair_pct:.1f}% {r.pair_ci95}"))
    if not rows:
        return []
    rows.sort(key=lambda x: (x[0], -float(x[2])))
    out = [f"Claim 2 on every sample that ran ({dataset}, positions >= 5; the twin rows are in the tables):", "",
           "| model | sample | tokens | sequence % [95% CI] | pair % [95% CI] |", "|---|---|---:|---|---|"]
    return out + [f"| {m} | {smp} | {int(n):,} | {a} | {b} |" for m, smp, n, a, b in rows] + [""]


# each claim's paragraph opens with these words; the anchor lets notebooks and the README link to it
ANCHORS = (("**Claim 1: ", "claim-1"), ("**Claim 1b: ", "claim-1b"), ("**Claim 2: ", "claim-2"),
           ("**Claim 2, what is learned", "claim-2-geometry"), ("**Claim 3: ", "claim-3"), ("**Claim 4: ", "claim-4"),
           ("**Can the 4-bit models be trusted?**", "quantisation"))


def with_anchors(text: str) -> str:
    """``text`` with an HTML anchor (``<a id="claim-3"></a>``) on its own line before each claim's paragraph."""
    out = []
    for line in text.split("\n"):
        ids = [a for prefix, a in ANCHORS if line.startswith(prefix)]
        out += [f'<a id="{ids[0]}"></a>', ""] if ids else []
        out.append(line)
    return "\n".join(out)


def render(results: str | Path, figures: str | Path = FIGURES_DIR) -> str:
    """The full findings, as Markdown, from the CSVs in ``results`` (links to the figures in ``figures``), written
    to ``docs/findings.md`` (links relative to the repository root; the writer rebases them)."""
    results, figures = Path(results), Path(figures)
    cross = _read(results, "08_cross_model")
    parts: list[str] = ["### Findings", "",
                        "Generated by `python -m helpers readme` from `results/` (default profile unless a "
                        "table says otherwise); every table is in [`results/README.md`](results/README.md).", ""]
    parts += headline(cross, _read(results, "09_geometry_rates"))
    figure = next((f for f in (figures / "08_scale_wikitext-103.png", figures / "08_cross_model_wikitext-103.png")
                   if f.is_file()), None)
    if figure is not None:
        parts += [f"![{figure.stem}](figures/{figure.name})", ""]
    if cross is None:
        parts += ["Claims 1-2: run notebook 08 (`python -m helpers notebook 08`) for the cross-model table.", ""]
    else:
        caption = (results / "08_cross_model.md").read_text().split("\n", 1)[0] if (results / "08_cross_model.md").is_file() else ""
        parts += ([f"Claims 1-2 come from notebook 08. {caption}", ""] if caption else [])
        parts += inner_loss_section(cross) + [""] + norms_section(cross) + [""]
        figs = sorted(figures.glob("08_cross_model_*.png")) + sorted(figures.glob("08_checkpoints.png"))
        parts += [" ".join(f"[{f.stem}](figures/{f.name})" for f in figs), ""] if figs else []
        parts += ["Full table: [`results/08_cross_model_readable.md`](results/08_cross_model_readable.md).", ""]
    powered, thirds = _read(results, "07_powered_thirds"), _read(results, "07_descent_thirds")
    if powered is not None and len(powered):
        parts += [POWERED_TITLE, ""] + powered_reading(powered, _read(results, "07_line_search_thirds"),
                                                       _read(results, "07_gradient_agreement"),
                                                       _read(results, "07_ablation")).split("\n")
        figs = [f for name in ("07_powered_*.png", "07_line_search_*.png", "07_ablation_*.png")
                for f in sorted(figures.glob(name))]
        parts += [" ".join(f"[{f.stem}](figures/{f.name})" for f in figs), ""] if figs else []
    elif thirds is not None and len(thirds):
        parts += descent_section(thirds) + [""]
    rates = _read(results, "09_geometry_rates")
    if rates is not None and len(rates):
        parts += geometry_section(rates, _read(results, "09_geometry_flips")) + [""]
        figs = sorted(figures.glob("09_rates_vs_null.png"))
        parts += [" ".join(f"[{f.stem}](figures/{f.name})" for f in figs), ""] if figs else []
    table2 = _read(results, "05_table2_overall")
    if table2 is not None:
        parts += table2_section(table2, _read(results, "05_surrogate_agreement")) + [""]
    parts += dynamics_section(_read(results, "06_losses_synthetic_default"),
                              _read(results, "06_norms_natural_default"),
                              _read(results, "06_norms_synthetic_default"),
                              PROFILES["default"].synthetic.data.vocab_size) + [""]
    quant = _read(results, "08_quantisation")
    if quant is not None and len(quant):
        parts += quantisation_section(quant, _read(results, "08_quantised_tensors"), cross,
                                      _read(results, "09_geometry_flips"))
    return with_anchors("\n".join(parts).rstrip() + "\n")
