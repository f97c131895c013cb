"""Every model here on the same texts, beside its null (notebook 08, issue 15).

The null of Table 1 is not chance (2^-n): residual streams grow by adding nearly orthogonal updates, so an
*untrained* network of the same architecture already has mostly non-decreasing norms. Each model therefore gets
a row for itself and one for its untrained twin (:func:`helpers.twins.untrained_twin`; for the project-trained
model, its own initialisation, checkpoint 0, and every later checkpoint), all on the same texts with one token
cap. A row holds the Table 1 numbers at the paper's positions with 95% cluster-bootstrap CIs and the inner loss
(Eq. 14) summary, for the paper's filter (final loss <= 1) and for the seeded "all tokens" sample.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.analysis import MAX_FINAL_LOSS
from helpers.models import LoadedModel
from helpers.pipeline import DatasetRun
from helpers.reports import PAPER_LAYERS, PAPER_TABLE1, loss_curves, norm_stats

TRAINED, TWIN, CHECKPOINT = "trained", "untrained twin", "checkpoint"


@dataclass
class Entry:
    """One model of the table: the loaded model, the base model it belongs to (``group``), its role (trained,
    untrained twin, checkpoint, or a quantisation scheme) and, for checkpoints, epoch and optimiser step."""

    lm: LoadedModel
    group: str
    role: str
    epoch: int | None = None
    step: int | None = None


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
    return {
        "model": entry.lm.label, "group": entry.group, "role": entry.role, "epoch": entry.epoch, "step": entry.step,
        "layers": run.n_layers, "dataset": run.dataset, "n_texts": st["n_texts"], "n_tokens": st["n"],
        "steps": st["steps"], "sequence_pct": st["sequence_pct"], "sequence_lo": st["sequence_lo"],
        "sequence_hi": st["sequence_hi"], "pair_pct": st["pair_pct"], "pair_lo": st["pair_lo"],
        "pair_hi": st["pair_hi"], "chance_pct": st["chance_pct"],
        "inner_first": paper["first"], "inner_last": paper["last"], "inner_down_pct": paper["down_pct"],
        "inner_tokens": paper["tokens"], "inner_all_first": every["first"], "inner_all_last": every["last"],
        "inner_all_down_pct": every["down_pct"], "inner_all_tokens": every["tokens"],
    }


def add_twin_columns(rows: pd.DataFrame) -> pd.DataFrame:
    """``twin_sequence_pct`` / ``twin_pair_pct``: the value of each row's untrained twin (same group, same dataset;
    for the project-trained model its checkpoint at epoch 0)."""
    twins = rows[(rows.role == TWIN) | ((rows.role == CHECKPOINT) & (rows.epoch == 0))]
    twins = twins.drop_duplicates(["group", "dataset"]).set_index(["group", "dataset"])
    out = rows.copy()
    for col in ("sequence_pct", "pair_pct"):
        out[f"twin_{col}"] = [twins[col].get((g, d), np.nan) for g, d in zip(out.group, out.dataset, strict=True)]
    return out


def paper_rows(datasets: list[str]) -> pd.DataFrame:
    """The paper's Table 1 rows (GPT-2, LLaMA-7B/13B) in the table's columns, with their depth and chance level."""
    p = PAPER_TABLE1[PAPER_TABLE1.dataset.isin(datasets)].copy()
    p["layers"] = p.model.map(PAPER_LAYERS)
    p["steps"] = p.layers - 1
    p["chance_pct"] = 100 * 2.0 ** -p.steps.astype(float)
    return p.assign(model=p.model + " (paper)", group=p.model, role="paper (Table 1)")


def reader_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The table readers see: CIs as text, the twin's value beside each row, '-' where a value does not exist
    (the paper did not report it, or no token has final loss <= 1)."""
    def ci(v, lo, hi):
        return "-" if pd.isna(v) else (f"{v:.1f}" if pd.isna(lo) else f"{v:.1f} [{lo:.1f}, {hi:.1f}]")

    def num(v, fmt="{:.2f}"):
        return "-" if pd.isna(v) else fmt.format(v)

    out = pd.DataFrame({
        "dataset": rows.dataset,
        "model": rows.model,
        "role": [r if pd.isna(s) else f"{r} (step {int(s):,})" for r, s in zip(rows.role, rows.step, strict=True)],
        "layers": rows.layers.astype(int),
        "tokens": [num(v, "{:,.0f}") for v in rows.get("n_tokens", pd.Series(np.nan, index=rows.index))],
        "sequence % [95% CI]": [ci(*v) for v in zip(rows.sequence_pct, rows.get("sequence_lo", np.nan),
                                                     rows.get("sequence_hi", np.nan), strict=False)],
        "pair % [95% CI]": [ci(*v) for v in zip(rows.pair_pct, rows.get("pair_lo", np.nan),
                                                 rows.get("pair_hi", np.nan), strict=False)],
        "chance %": [f"{v:.2g}" for v in rows.chance_pct],
        "untrained twin: sequence / pair %": [
            "-" if pd.isna(s) else f"{s:.1f} / {p:.1f}"
            for s, p in zip(rows.get("twin_sequence_pct", np.nan), rows.get("twin_pair_pct", np.nan), strict=False)],
        "inner loss, layer 0 -> last (final loss <= 1)": [
            "-" if pd.isna(a) else f"{a:.2f} -> {b:.2f}"
            for a, b in zip(rows.get("inner_first", np.nan), rows.get("inner_last", np.nan), strict=False)],
        "steps down %": [num(v, "{:.0f}") for v in rows.get("inner_down_pct", pd.Series(np.nan, index=rows.index))],
        "inner loss, all tokens (sample)": [
            "-" if pd.isna(a) else f"{a:.2f} -> {b:.2f}"
            for a, b in zip(rows.get("inner_all_first", np.nan), rows.get("inner_all_last", np.nan), strict=False)],
    })
    return out.reset_index(drop=True)


def natural_checkpoints(profile: str, cache_dir: str | Path = "results/cache", seed: int = 0,
                        device: str = "cpu") -> Iterator[Entry]:
    """The project-trained natural-text model of ``profile`` at every checkpoint (epoch 0 = its initialisation,
    the untrained twin); nothing, with a printed note, when notebook 06 has not trained it."""
    import json

    from helpers.checkpoints import list_checkpoints, load_checkpoint
    from helpers.training import gpt2_bpe_tokenizer, natural_run_dir, natural_setup

    data, cfg, _ = natural_setup(profile, seed)
    paths = list_checkpoints(natural_run_dir(cache_dir, profile, seed))
    if not paths:
        print(f"natural: the natural-text model of profile '{profile}' is not trained yet (run notebook 06): skipped")
        return
    tokenizer = gpt2_bpe_tokenizer(data["vocab_size"])
    for path in paths:
        state = json.loads((path / "state.json").read_text())
        label = f"GPT-2 arch. on natural text ({cfg.n_layer} layers, d={cfg.n_embd}), epoch {state['epoch']}"
        lm = load_checkpoint(path, device=device, tokenizer=tokenizer, label=label)
        lm.name = f"gpt2-natural-{profile}-epoch{state['epoch']}"
        lm.note = "project-trained (notebook 06)" + (", initialisation" if state["epoch"] == 0 else "")
        yield Entry(lm, group="natural", role=CHECKPOINT, epoch=int(state["epoch"]), step=int(state["step"]))


def flip_table(base: DatasetRun, other: DatasetRun, name: str) -> dict:
    """How a weight change (e.g. a 4-bit round trip) moves Table 1 on the *same* tokens: the share of tokens whose
    sequence-level verdict (every step non-decreasing) flips and of single steps that flip, and the change of
    each rate in percentage points."""
    from helpers.norms import step_ok
    from helpers.reports import norm_trajectories

    a, b = base.records, other.records
    if not (np.array_equal(a["text_id"], b["text_id"]) and np.array_equal(a["position"], b["position"])):
        raise ValueError("the two runs cover different tokens: compare runs of one tokenizer on the same texts")
    mask = a["position"] >= base.min_position
    ok_a = step_ok(norm_trajectories(a, base.n_layers)[mask])
    ok_b = step_ok(norm_trajectories(b, other.n_layers)[mask])
    return {"dataset": base.dataset, "weights": name, "tokens": int(mask.sum()),
            "sequence flips %": 100 * float(np.mean(ok_a.all(1) != ok_b.all(1))),
            "step flips %": 100 * float(np.mean(ok_a != ok_b)),
            "sequence change (pp)": 100 * float(ok_b.all(1).mean() - ok_a.all(1).mean()),
            "pair change (pp)": 100 * float(ok_b.mean() - ok_a.mean())}


def model_entries(spec: str, profile: str, cache_dir: str | Path = "results/cache", twin_seed: int = 0,
                  device: str = "cpu") -> Iterator[Entry]:
    """The entries of one model of the table: ``"natural"`` gives every checkpoint of the project-trained model;
    anything else (registry name, hub id, local folder or .gguf) gives the model and its untrained twin. A
    registry model whose package is not installed, or a hub id not in the local cache (offline runs), gives
    nothing and a printed note; other failures are raised."""
    from helpers.models import REGISTRY, load_model
    from helpers.surrogates.inputs import hub_model_cached
    from helpers.twins import load_available, untrained_twin

    if spec == "natural":
        yield from natural_checkpoints(profile, cache_dir, device=device)
        return
    if spec in REGISTRY:
        lm = load_available(spec, profile, cache_dir, device=device)
    elif Path(spec).exists() or hub_model_cached(spec):
        lm = load_model(spec, device=device)
    else:
        print(f"{spec}: not in the local Hugging Face cache and not a local path (offline run): skipped")
        lm = None
    if lm is None:
        return
    yield Entry(lm, group=spec, role=TRAINED)
    yield Entry(untrained_twin(lm, seed=twin_seed), group=spec, role=TWIN)


def analyse_entry(entry: Entry, datasets: list[str], profile: str, cache_dir: str = "results/cache",
                  **kwargs) -> dict[str, DatasetRun]:
    """Every dataset of the profile's cross-model sample (same texts and token cap for every model) through the
    cached analysis. ``kwargs`` go to :func:`helpers.pipeline.analyse_dataset` (batch_tokens, data_dir, ...)."""
    from helpers.pipeline import analyse_dataset
    from helpers.profiles import get_profile

    cross = get_profile(profile).cross
    return {ds: analyse_dataset(entry.lm, ds, profile=profile, cache_dir=cache_dir, max_tokens=cross.max_tokens,
                                n_texts=cross.wikitext_texts if ds == "wikitext-103" else cross.onebw_texts, **kwargs)
            for ds in datasets}


def _vs_twin(lo: float, hi: float, twin: float) -> str:
    if pd.isna(twin):
        return "no twin"
    return "above its untrained twin" if lo > twin else "below its untrained twin" if hi < twin else \
        "not distinguishable from its untrained twin"


def reading(full: pd.DataFrame, flips: pd.DataFrame) -> str:
    """The reading of notebook 08, rendered from its numbers: each model against its twin, the project-trained
    model over training, and what 4-bit rounding moves."""
    ours = full[full.role != "paper (Table 1)"]
    lines = []
    for ds, t in ours.groupby("dataset", sort=False):
        for _, r in t[t.role == TRAINED].iterrows():
            lines.append(
                f"- **{r.model}, {ds}**: sequence {r.sequence_pct:.1f}% [{r.sequence_lo:.1f}, {r.sequence_hi:.1f}], "
                f"{_vs_twin(r.sequence_lo, r.sequence_hi, r.twin_sequence_pct)} ({r.twin_sequence_pct:.1f}%); pair "
                f"{r.pair_pct:.1f}% [{r.pair_lo:.1f}, {r.pair_hi:.1f}], "
                f"{_vs_twin(r.pair_lo, r.pair_hi, r.twin_pair_pct)} ({r.twin_pair_pct:.1f}%); chance "
                f"{r.chance_pct:.1e}%." + _inner_text(r, t))
        ck = t[t.role == CHECKPOINT].sort_values("epoch")
        if len(ck) >= 2:
            a, b = ck.iloc[0], ck.iloc[-1]
            lines.append(
                f"- **project-trained model, {ds}**: sequence {a.sequence_pct:.1f}% at initialisation, "
                f"{b.sequence_pct:.1f}% [{b.sequence_lo:.1f}, {b.sequence_hi:.1f}] after {int(b.step):,} steps "
                f"(epoch {int(b.epoch)}); pair {a.pair_pct:.1f}% -> {b.pair_pct:.1f}%. Training "
                f"{'lowers' if b.sequence_hi < a.sequence_pct else 'raises' if b.sequence_lo > a.sequence_pct else 'does not move'}"
                f" the sequence-level rate." + _inner_text(b, t))
    if len(flips):
        worst = flips.loc[flips["sequence change (pp)"].abs().idxmax()]
        lines.append(
            f"- **4-bit rounding** (project-trained model, same tokens): the sequence-level rate moves by at most "
            f"{worst['sequence change (pp)']:+.2f} pp ({worst.weights}, {worst.dataset}); "
            f"{flips['sequence flips %'].max():.2f}% of tokens flip their sequence-level verdict and "
            f"{flips['step flips %'].max():.2f}% of single steps flip; the pair level moves by at most "
            f"{flips['pair change (pp)'].abs().max():.2f} pp.")
        gaps = [abs(r.sequence_pct - r.twin_sequence_pct) for _, r in ours[ours.role == TRAINED].iterrows()
                if pd.notna(r.twin_sequence_pct)]
        if gaps:
            lines.append(
                f"  The gaps between a trained model and its twin here are {min(gaps):.1f}-{max(gaps):.1f} pp, so a "
                f"rounding effect of this size {'cannot' if max(flips['sequence change (pp)'].abs()) < min(gaps) else 'could'}"
                f" change which side of its twin a model falls on, if SmolLM2's and Gemma's rounding acts as it does "
                f"on this model (an assumption: their fp32 weights are not available here).")
    return ("**Reading.** The null of Conjecture 4.1 is the untrained twin, not chance.\n" + "\n".join(lines))


def _inner_text(r: pd.Series, t: pd.DataFrame) -> str:
    if pd.notna(r.inner_first):
        return (f" Inner loss (final loss <= 1, {int(r.inner_tokens):,} tokens) {r.inner_first:.2f} -> "
                f"{r.inner_last:.2f}, {r.inner_down_pct:.0f}% of layer steps down.")
    if pd.notna(r.inner_all_first):
        return (f" No token passes the paper's filter; over a sample of all tokens the inner loss goes "
                f"{r.inner_all_first:.2f} -> {r.inner_all_last:.2f}.")
    return ""
