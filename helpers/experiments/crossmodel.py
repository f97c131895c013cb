"""Every model here on the same texts, beside its null (notebook 08).

The null of Table 1 is not chance (2^-n): residual streams grow by adding nearly orthogonal updates, so an
*untrained* network of the same architecture already has mostly non-decreasing norms. Each model therefore gets
a row for itself and one for its untrained twin (:func:`helpers.lm.twin.untrained_twin`; for the project-trained
model, its own initialisation, checkpoint 0, and every later checkpoint), all on the same texts with one token
cap. A row holds the Table 1 numbers at the paper's positions with 95% cluster-bootstrap CIs and the inner loss
(Eq. 14) summary, for the paper's filter (final loss <= 1) and for the seeded "all tokens" sample.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from helpers import CompendiumError
from helpers.config import Profile
from helpers.experiments.cross_rows import (
    add_twin_columns,
    analyse_entry,
    entry_key,
    entry_row,
    flip_table,
    paper_rows,
    reader_table,
)
from helpers.experiments.zoo import CHECKPOINT, NATURAL, TRAINED, Entry, model_entries
from helpers.lm.quantise import quantised_twin
from helpers.paths import CACHE_DIR
from helpers.report.figures import fig_checkpoints, fig_cross_model, fig_scale
from helpers.report.output import save_figure, save_table


def versus(lo: float, hi: float) -> str:
    """Verdict of a difference (model - twin) from its 95% CI: above, below, or not distinguishable."""
    if pd.isna(lo):
        return "not compared with"
    return "above" if lo > 0 else "below" if hi < 0 else "not distinguishable from"


def _twin_text(r: pd.Series, stat: str) -> str:
    if pd.isna(r[f"twin_{stat}_pct"]):
        return "no untrained twin"
    return (f"{versus(r[f'vs_twin_{stat}_lo'], r[f'vs_twin_{stat}_hi'])} its untrained twin "
            f"({r[f'twin_{stat}_pct']:.1f}%" + ("" if pd.isna(r[f"vs_twin_{stat}_pp"]) else
                                                 f"; difference {r[f'vs_twin_{stat}_pp']:+.1f} pp "
                                                 f"[{r[f'vs_twin_{stat}_lo']:+.1f}, {r[f'vs_twin_{stat}_hi']:+.1f}]") + ")")


def reading(full: pd.DataFrame, flips: pd.DataFrame) -> str:
    """The reading of notebook 08, rendered from its numbers: each model against its twin (paired difference CI),
    the project-trained model over training, and what weight rounding moves, scaled to each model's depth."""
    ours = full[full.role != "paper (Table 1)"]
    lines = []
    for ds, t in ours.groupby("dataset", sort=False):
        for _, r in t[t.role == TRAINED].iterrows():
            lines.append(
                f"- **{r.model}, {ds}**: sequence {r.sequence_pct:.1f}% [{r.sequence_lo:.1f}, {r.sequence_hi:.1f}], "
                f"{_twin_text(r, 'sequence')}; pair {r.pair_pct:.1f}% [{r.pair_lo:.1f}, {r.pair_hi:.1f}], "
                f"{_twin_text(r, 'pair')}; chance {r.chance_pct:.1e}%." + _inner_text(r, t))
        ck = t[t.role == CHECKPOINT].sort_values("epoch")
        if len(ck) >= 2 and ck.epoch.iloc[0] == 0:
            a, b = ck.iloc[0], ck.iloc[-1]
            lines.append(
                f"- **project-trained model, {ds}**: sequence {a.sequence_pct:.1f}% at initialisation, "
                f"{b.sequence_pct:.1f}% [{b.sequence_lo:.1f}, {b.sequence_hi:.1f}] after {int(b.step):,} steps "
                f"(epoch {int(b.epoch)}): {_twin_text(b, 'sequence')}; pair {a.pair_pct:.1f}% -> {b.pair_pct:.1f}%."
                + _inner_text(b, t))
    if len(flips):
        worst = flips.loc[flips["sequence change (pp)"].abs().idxmax()]
        step_flip = float(flips["step flips %"].max())
        lines.append(
            f"- **Weight rounding** (project-trained model, same tokens): the sequence-level rate moves by at most "
            f"{worst['sequence change (pp)']:+.2f} pp ({worst.weights}, {worst.dataset}); "
            f"{flips['sequence flips %'].max():.2f}% of tokens flip their sequence-level verdict and "
            f"{step_flip:.3f}% of single layer steps flip; the pair level moves by at most "
            f"{flips['pair change (pp)'].abs().max():.2f} pp.")
        for _, r in ours[(ours.role == TRAINED) & ours.vs_twin_sequence_pp.notna()].iterrows():
            bound = min(100.0, step_flip * r.steps)
            lo, hi = r.vs_twin_sequence_lo, r.vs_twin_sequence_hi
            margin = lo if lo > 0 else -hi if hi < 0 else 0.0  # distance of the CI from 'no difference'
            lines.append(
                f"  For {r.model} ({int(r.steps)} steps, {r.dataset}) the same per-step flip rate would move at most "
                f"{bound:.2f}% of sequence verdicts (union bound), against a gap to its twin of "
                f"{r.vs_twin_sequence_pp:+.1f} pp [{lo:+.1f}, {hi:+.1f}]: rounding "
                f"{'cannot' if bound < margin else 'could'} change which side of its twin it falls on, if its "
                f"rounding acts as it does on the project-trained model (their fp32 weights are not available here).")
    return "**Reading.** The null of Conjecture 4.1 is the untrained twin, not chance.\n" + "\n".join(lines)


def _inner_text(r: pd.Series, t: pd.DataFrame) -> str:
    if pd.notna(r.inner_first):
        return (f" Inner loss (final loss <= 1, {int(r.inner_tokens):,} tokens) {r.inner_first:.2f} -> "
                f"{r.inner_last:.2f}, {r.inner_down_pct:.0f}% of layer steps down.")
    if pd.notna(r.inner_all_first):
        return (f" No token passes the paper's filter; over a sample of all tokens the inner loss goes "
                f"{r.inner_all_first:.2f} -> {r.inner_all_last:.2f}.")
    return ""


@dataclass
class CrossRun:
    """Every entry's rows with twin columns (``table``), the same with the paper's rows (``full``), the quantisation
    flips and per-tensor types of the project-trained model's last checkpoint, and the sample's description."""

    table: pd.DataFrame
    full: pd.DataFrame
    flips: pd.DataFrame
    tensors: pd.DataFrame
    sample: str
    suffix: str
    datasets: list[str]
    timings: pd.DataFrame  # per entry: seconds (load, analysis of every dataset) and the process's peak RSS so far


def sample_text(profile: Profile) -> str:
    """What every model of the table saw, for captions."""
    cross, share = profile.cross, profile.corpus.filter_share
    filtered = "the tokens" if share is None else f"a seeded {100 * share:g}% of the tokens"
    return (f"the same texts for every model: {cross.wikitext_texts} WikiText-103 test paragraphs and "
            f"{cross.onebw_texts} 1BW test sentences (seeded sample after the paper's filtering), first "
            f"{cross.max_tokens} tokens of each, tokens at positions >= 5; Eq. 14 lens on {filtered} with final loss "
            f"<= 1 and a seeded {100 * cross.lens_share:g}% of all tokens; profile {profile.name}")


def _quantised(base: tuple[Entry, dict], datasets: list[str], profile: Profile, opts: dict) -> Iterator[tuple]:
    """(entry, runs, flips, tensor table) of each GGUF scheme of the profile applied to the ``base`` entry."""
    base_entry, base_runs = base
    cross = profile.cross
    for scheme in cross.schemes:
        q_lm = quantised_twin(base_entry.lm, scheme)
        q_entry = Entry(q_lm, group=base_entry.group, role=f"{scheme} round trip", epoch=base_entry.epoch,
                        step=base_entry.step)
        q_runs = analyse_entry(q_entry, datasets, profile, **opts)
        flips = [flip_table(base_runs[ds], q_runs[ds], scheme) for ds in datasets]
        yield q_entry, q_runs, flips, q_lm.extra["tensors"].assign(scheme=scheme)


def run(specs: list[str], datasets: list[str], profile: Profile, cache_dir: str = CACHE_DIR, device: str = "cpu",
        **opts) -> CrossRun:
    """Every model of ``specs`` with its twin (or every checkpoint of ``"natural"``) on the profile's cross-model
    sample, then the GGUF round trips of the natural model's last checkpoint. ``opts`` go to
    :func:`helpers.runs.datasets.analyse_dataset` (batch_tokens, data_dir, filtered_dir)."""
    cross = profile.cross
    rows, runs_of, natural_last, flips, tensors, timings = [], {}, None, [], [], []
    opts = dict(opts, cache_dir=cache_dir)
    for spec in specs:
        start = time.time()
        for entry in model_entries(spec, profile, cache_dir, twin_seed=cross.twin_seed, device=device):
            runs = analyse_entry(entry, datasets, profile, **opts)
            rows += [entry_row(entry, r, n_boot=cross.n_boot) for r in runs.values()]
            runs_of[entry_key(entry.group, entry.role, entry.epoch)] = runs
            if entry.group == NATURAL:
                natural_last = (entry, runs)  # checkpoints come in epoch order: the last one stays
            timings.append({"model": entry.lm.label, "role": entry.role, "seconds": round(time.time() - start, 1),
                            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)})
            start = time.time()
    if not rows:
        raise CompendiumError(f"none of the models {specs} could be loaded (see the notes above): install them "
                              "(make models), train the natural-text model (notebook 06) or name models that exist here")
    for q_entry, q_runs, q_flips, q_tensors in (_quantised(natural_last, datasets, profile, opts) if natural_last else ()):
        rows += [entry_row(q_entry, r, n_boot=cross.n_boot) for r in q_runs.values()]
        runs_of[entry_key(q_entry.group, q_entry.role, q_entry.epoch)] = q_runs
        flips += q_flips
        tensors.append(q_tensors)
    table = add_twin_columns(pd.DataFrame(rows), runs_of, n_boot=cross.n_boot)
    full = pd.concat([table, paper_rows(datasets)], ignore_index=True)
    return CrossRun(table, full, pd.DataFrame(flips), pd.concat(tensors, ignore_index=True) if tensors else pd.DataFrame(),
                    sample_text(profile), "" if profile.name == "default" else f"_{profile.name}", list(datasets),
                    pd.DataFrame(timings))


def report_table(r: CrossRun, results_dir: str) -> tuple[None, pd.DataFrame]:
    """The full table (``08_cross_model``), the reader's table (``08_cross_model_readable``, returned) and the
    wall time and peak memory per entry (``08_timings``)."""
    shown = reader_table(r.full)
    save_table(r.timings, f"08_timings{r.suffix}", results_dir,
               caption=f"Wall time per entry (load and every dataset) and the run's peak resident memory after it. "
                       f"{r.sample}.")
    save_table(r.full, f"08_cross_model{r.suffix}", results_dir,
               caption=f"Cross-model table, {r.sample}; the paper's rows (its own full-text sample) below ours.")
    save_table(shown, f"08_cross_model_readable{r.suffix}", results_dir,
               caption=f"Table 1 and the inner loss for every model beside its untrained twin, chance and the "
                       f"paper. {r.sample}. 95% CIs: cluster bootstrap over texts. '-': not reported (paper) or no "
                       f"token with final loss <= 1.")
    return None, shown


def report_figures(r: CrossRun, figures_dir: str) -> tuple[list[go.Figure], pd.DataFrame]:
    """One cross-model figure per dataset (``08_cross_model_<ds>``) and, when checkpoints ran, the rate over
    training (``08_checkpoints``)."""
    figs = []
    for ds in r.datasets:
        figs.append(fig_cross_model(r.full, ds, f"Non-decreasing norms per model, {ds}",
                                    f"{r.sample}; whiskers: 95% CI; open marker: the untrained twin; star: the paper"))
        save_figure(figs[-1], f"08_cross_model{r.suffix}_{ds}", figures_dir)
    if (r.table.role == CHECKPOINT).any():
        figs.append(fig_checkpoints(r.table, "Sequence-level rate over training, project-trained model",
                                    f"{r.sample}; dashed: the same model at initialisation (its untrained twin); "
                                    "whiskers: 95% CI"))
        save_figure(figs[-1], f"08_checkpoints{r.suffix}", figures_dir)
    return figs, r.table


def report_scale(r: CrossRun, figures_dir: str) -> tuple[list[go.Figure], pd.DataFrame]:
    """Each headline statistic against parameter count, every model beside its twin, the paper's models as stars
    (``08_scale_<ds>``); returns the figures and the rows they draw."""
    figs = []
    for ds in r.datasets:
        figs.append(fig_scale(r.full, ds, f"Non-decrease of norms and the inner-loss trend against model size, {ds}",
                              f"{r.sample}; whiskers: 95% CI (cluster bootstrap over texts); GGUF 4-bit instruction "
                              f"fine-tunes (ours) against the paper's full-precision base models"))
        save_figure(figs[-1], f"08_scale{r.suffix}_{ds}", figures_dir)
    cols = ["model", "role", "dataset", "params", "layers", "sequence_pct", "pair_pct", "cal_tau"]
    return figs, r.full[r.full.params.notna()][[c for c in cols if c in r.full]]


def report_quantisation(r: CrossRun, results_dir: str) -> tuple[None, pd.DataFrame]:
    """The verdict flips under each GGUF scheme (``08_quantisation``) and the per-tensor types and errors
    (``08_quantised_tensors``); nothing when no scheme ran."""
    if not len(r.flips):
        return None, r.flips
    save_table(r.flips, f"08_quantisation{r.suffix}", results_dir,
               caption=f"The project-trained model's last checkpoint in fp32 against its weights rounded with "
                       f"GGUF schemes (Q4_1 as SmolLM2's file, Q4_K_M as Gemma's) on the same tokens: tokens "
                       f"whose verdict flips and the change of each rate. {r.sample}.")
    save_table(r.tensors, f"08_quantised_tensors{r.suffix}", results_dir,
               caption="GGUF type and relative Frobenius error of every weight of the project-trained model "
                       "under each scheme (kept: F32).")
    return None, r.flips
