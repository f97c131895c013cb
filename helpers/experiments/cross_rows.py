"""The rows of the cross-model table (notebook 08): Table 1 at the paper's positions, the inner loss summaries and
their calibration per entry, each row's untrained twin with the paired difference, the paper's rows, the reader's
table and the flip table of a weight change.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.config import MAX_FINAL_LOSS, Profile
from helpers.experiments.paper import PAPER_LAYERS, PAPER_PARAMS, PAPER_TABLE1, paper_references
from helpers.experiments.zoo import CHECKPOINT, TWIN, Entry
from helpers.paths import CACHE_DIR
from helpers.runs.analysis import NotFinished
from helpers.runs.datasets import DatasetRun, analyse_dataset
from helpers.stats.inner import paired_trend_difference, sample_calibration
from helpers.stats.intervals import ci_text, paired_difference_ci
from helpers.stats.monotone import step_ok
from helpers.stats.tokens import loss_curves, norm_stats, norm_trajectories


def inner_summary(records: dict[str, np.ndarray], max_final_loss: float | None) -> dict[str, float]:
    """Inner loss (Eq. 14) at the first and last layer, share (%) of layer steps that go down, and tokens covered,
    for the paper's filter (``max_final_loss``) or the "all tokens" sample (None); NaN where no token qualifies."""
    if "inner_loss" not in records:
        return {"first": np.nan, "last": np.nan, "down_pct": np.nan, "tokens": 0}
    c = loss_curves(records, max_final_loss)
    c = c[c.lens == "inner_loss"].sort_values("layer")
    n = int(c.n_tokens.iloc[0]) if len(c) else 0
    if n == 0:
        return {"first": np.nan, "last": np.nan, "down_pct": np.nan, "tokens": 0}
    m = c["mean"].to_numpy()
    return {"first": float(m[0]), "last": float(m[-1]), "down_pct": 100 * float(np.mean(np.diff(m) <= 0)),
            "tokens": n}


def entry_row(entry: Entry, run: DatasetRun, n_boot: int = 1000, seed: int = 0) -> dict:
    """One row of the cross-model table: Table 1 at the paper's positions and the inner-loss summaries."""
    rec = run.records
    st = norm_stats(rec, run.n_layers, rec["position"] >= run.min_position, n_boot=n_boot, seed=seed)
    paper = inner_summary(rec, MAX_FINAL_LOSS)
    every = inner_summary(rec, None)
    cal = sample_calibration(rec, run.min_position, int(entry.lm.model.config.vocab_size), n_boot, seed)
    return {
        "model": entry.lm.label, "group": entry.group, "role": entry.role, "epoch": entry.epoch, "step": entry.step,
        "family": entry.lm.family, "paper_refs": ";".join(paper_references(entry.lm.family)),
        "params": entry.lm.n_params, "layers": run.n_layers, "dataset": run.dataset, "n_texts": st["n_texts"], "n_tokens": st["n"],
        "steps": st["steps"], "sequence_pct": st["sequence_pct"], "sequence_lo": st["sequence_lo"],
        "sequence_hi": st["sequence_hi"], "pair_pct": st["pair_pct"], "pair_lo": st["pair_lo"],
        "pair_hi": st["pair_hi"], "interval": st["interval"], "sequence_per_step_pct": st["sequence_per_step_pct"],
        "sequence_tol1_pct": st["sequence_tol1_pct"], "sequence_tol5_pct": st["sequence_tol5_pct"],
        "chance_pct": st["chance_pct"],
        "inner_first": paper["first"], "inner_last": paper["last"], "inner_down_pct": paper["down_pct"],
        "inner_tokens": paper["tokens"], "inner_all_first": every["first"], "inner_all_last": every["last"],
        "inner_all_down_pct": every["down_pct"], "inner_all_tokens": every["tokens"],
        **{f"cal_{k}": v for k, v in cal.items()},
    }


def same_tokens(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    """Whether two runs' records cover the same tokens in the same order (same texts, same tokenizer)."""
    return np.array_equal(a["text_id"], b["text_id"]) and np.array_equal(a["position"], b["position"])


def entry_key(group: str, role: str, epoch) -> tuple:
    """The key of one entry's runs: (group, role, epoch or None)."""
    return group, role, None if epoch is None or pd.isna(epoch) else int(epoch)


def twin_key(group: str, rows: pd.DataFrame) -> tuple | None:
    """The key of ``group``'s untrained twin: its twin entry, or for the project-trained model checkpoint 0."""
    g = rows[rows.group == group]
    if (g.role == TWIN).any():
        return group, TWIN, None
    if ((g.role == CHECKPOINT) & (g.epoch == 0)).any():
        return group, CHECKPOINT, 0
    return None


def add_twin_columns(rows: pd.DataFrame, runs: dict | None = None, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Each row's untrained twin (same group and dataset; for the project-trained model its checkpoint at epoch 0):
    ``twin_sequence_pct`` / ``twin_pair_pct``, and when ``runs`` ({entry_key: {dataset: DatasetRun}}) is given the
    paired difference model - twin in percentage points with a 95% CI from one cluster bootstrap over the shared
    texts (``vs_twin_sequence_pp``, ``_lo``, ``_hi``; the same for pair) and of the interior inner-loss trend
    (``vs_twin_tau``, ``_lo``, ``_hi``: Claim 1's paired check). NaN where there is no twin."""

    out = rows.copy().reset_index(drop=True)
    cols = [f"{p}{stat}{q}" for stat in ("sequence", "pair") for p, q in (("twin_", "_pct"), ("vs_twin_", "_pp"),
                                                                          ("vs_twin_", "_lo"), ("vs_twin_", "_hi"))]
    cols += ["vs_twin_tau", "vs_twin_tau_lo", "vs_twin_tau_hi"]
    for col in cols:
        out[col] = np.nan
    for i, r in out.iterrows():
        tk = twin_key(r.group, out)
        if tk is None or entry_key(r.group, r.role, r.epoch) == tk:
            continue
        twin = out[(out.group == r.group) & (out.dataset == r.dataset) & (out.role == tk[1])
                   & ((out.epoch == 0) if tk[2] == 0 else True)]
        if twin.empty:
            continue
        for stat in ("sequence", "pair"):
            out.loc[i, f"twin_{stat}_pct"] = twin[f"{stat}_pct"].iloc[0]
        if runs is None:
            continue
        mine, theirs = runs[entry_key(r.group, r.role, r.epoch)][r.dataset], runs[tk][r.dataset]
        a, b = mine.records, theirs.records
        if not same_tokens(a, b):
            continue  # a different tokenizer: no pairing
        mask = a["position"] >= mine.min_position
        diff = paired_difference_ci(norm_trajectories(a, mine.n_layers)[mask],
                                    norm_trajectories(b, theirs.n_layers)[mask], a["text_id"][mask], n_boot, seed=seed)
        for stat in ("sequence", "pair"):
            d, lo, hi = diff[f"{stat}_pct"]
            out.loc[i, [f"vs_twin_{stat}_pp", f"vs_twin_{stat}_lo", f"vs_twin_{stat}_hi"]] = [d, lo, hi]
        tau = paired_trend_difference(a, b, mine.min_position, n_boot, seed)
        out.loc[i, ["vs_twin_tau", "vs_twin_tau_lo", "vs_twin_tau_hi"]] = list(tau.values())
    return out


def paper_rows(datasets: list[str]) -> pd.DataFrame:
    """The paper's Table 1 rows (GPT-2, LLaMA-7B/13B) in the table's columns, with their depth and chance level."""
    p = PAPER_TABLE1[PAPER_TABLE1.dataset.isin(datasets)].copy()
    p["layers"] = p.model.map(PAPER_LAYERS)
    p["params"] = p.model.map(PAPER_PARAMS)
    p["steps"] = p.layers - 1
    p["chance_pct"] = 100 * 2.0 ** -p.steps.astype(float)
    p["sequence_per_step_pct"] = 100 * (p.sequence_pct / 100) ** (1 / p.steps.astype(float))
    return p.assign(model=p.model + " (paper)", group=p.model, role="paper (Table 1)")


def reader_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The table readers see: CIs as text, the twin's value beside each row, '-' where a value does not exist
    (the paper did not report it, or no token has final loss <= 1)."""
    def ci(v, lo, hi):
        return "-" if pd.isna(v) else (f"{v:.1f}" if pd.isna(lo) else f"{v:.1f} {ci_text(lo, hi)}")

    def num(v, fmt="{:.2f}"):
        return "-" if pd.isna(v) else fmt.format(v)

    def col(name):
        return rows[name] if name in rows else pd.Series(np.nan, index=rows.index)

    out = pd.DataFrame({
        "dataset": rows.dataset,
        "model": rows.model,
        "role": [r if pd.isna(s) else f"{r} (step {int(s):,})" for r, s in zip(rows.role, rows.step, strict=True)],
        "layers": rows.layers.astype(int),
        "tokens": [num(v, "{:,.0f}") for v in col("n_tokens")],
        "sequence % [95% CI]": [ci(*v) for v in zip(rows.sequence_pct, col("sequence_lo"),
                                                     col("sequence_hi"), strict=True)],
        "pair % [95% CI]": [ci(*v) for v in zip(rows.pair_pct, col("pair_lo"),
                                                 col("pair_hi"), strict=True)],
        "per step, sequence^(1/n) %": [num(v, "{:.1f}") for v in col("sequence_per_step_pct")],
        "chance %": [f"{v:.3g}" for v in rows.chance_pct],
        "untrained twin: sequence / pair %": [
            "-" if pd.isna(s) else f"{s:.1f} / {p:.1f}"
            for s, p in zip(col("twin_sequence_pct"), col("twin_pair_pct"), strict=True)],
        "sequence: model - twin, pp [95% CI]": [
            "-" if pd.isna(d) else f"{d:+.1f} {ci_text(lo, hi, sign=True)}"
            for d, lo, hi in zip(col("vs_twin_sequence_pp"), col("vs_twin_sequence_lo"), col("vs_twin_sequence_hi"),
                                 strict=True)],
        "inner loss, layer 0 -> last (final loss <= 1)": [
            "-" if pd.isna(a) else f"{a:.2f} -> {b:.2f}"
            for a, b in zip(col("inner_first"), col("inner_last"), strict=True)],
        "steps down %": [num(v, "{:.0f}") for v in col("inner_down_pct")],
        "inner loss, all tokens (sample)": [
            "-" if pd.isna(a) else f"{a:.2f} -> {b:.2f}"
            for a, b in zip(col("inner_all_first"), col("inner_all_last"), strict=True)],
    })
    return out.reset_index(drop=True)


def flip_table(base: DatasetRun, other: DatasetRun, name: str) -> dict:
    """How a weight change (e.g. a 4-bit round trip) moves Table 1 on the *same* tokens: the share of tokens whose
    sequence-level verdict (every step non-decreasing) flips and of single steps that flip, and the change of
    each rate in percentage points."""

    a, b = base.records, other.records
    if not same_tokens(a, b):
        raise ValueError("the two runs cover different tokens: compare runs of one tokenizer on the same texts")
    mask = a["position"] >= base.min_position
    ok_a = step_ok(norm_trajectories(a, base.n_layers)[mask])
    ok_b = step_ok(norm_trajectories(b, other.n_layers)[mask])
    return {"dataset": base.dataset, "weights": name, "tokens": int(mask.sum()),
            "sequence flips %": 100 * float(np.mean(ok_a.all(1) != ok_b.all(1))),
            "step flips %": 100 * float(np.mean(ok_a != ok_b)),
            "sequence change (pp)": 100 * float(ok_b.all(1).mean() - ok_a.all(1).mean()),
            "pair change (pp)": 100 * float(ok_b.mean() - ok_a.mean())}


def analyse_entry(entry: Entry, datasets: list[str], profile: Profile, cache_dir: str = CACHE_DIR,
                  **kwargs) -> dict[str, DatasetRun]:
    """Every dataset of the profile's cross-model sample (same texts and token cap for every model) through the
    cached analysis. ``kwargs`` go to :func:`helpers.runs.datasets.analyse_dataset` (batch_tokens, data_dir, ...)."""

    cross = profile.cross
    n_texts = {"wikitext-103": cross.wikitext_texts, "1bw": cross.onebw_texts}

    def runs(lm, **more) -> dict[str, DatasetRun]:
        return {ds: analyse_dataset(lm, ds, profile=profile, cache_dir=cache_dir, max_tokens=cross.max_tokens,
                                    n_texts=n_texts[ds], lens_share=cross.lens_share, logit_lens=cross.logit_lens,
                                    **(kwargs | more)) for ds in datasets}

    if entry.lm.skeleton:  # every run cached: read them from the skeleton, load nothing
        try:
            return runs(entry.lm, cached_only=True, progress=False)
        except NotFinished:
            pass
    return runs(entry.with_weights())
