"""Notebook 06 end to end: train, measure every checkpoint, save figures and tables, render the reading.

:func:`run_synthetic` and :func:`run_natural` train (or reload) a model of a profile and measure
every checkpoint (:mod:`helpers.train.measures`); the ``report_*`` functions save one figure and its table
under the notebook's file names and return them; the ``reading_*`` functions state, as Markdown
built from the measured numbers, what each figure shows at the first and last checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from helpers.config import PROFILES, MeasureConfig, ModelConfig, Profile, TrainConfig
from helpers.corpus.natural import gpt2_bpe_tokenizer, natural_windows
from helpers.corpus.synthetic import (
    LABEL_KINDS,
    SyntheticData,
    bigram_loss,
    entropy_rate,
    make_dataset,
    oracle_loss,
)
from helpers.paths import CACHE_DIR
from helpers.report.figures_training import fig_attention, fig_clustering, fig_losses, fig_norm_stats
from helpers.report.output import save_figure, save_table, with_caption
from helpers.train.checkpoints import TrainRun
from helpers.train.loop import train_lm
from helpers.train.measures import measure_lm_checkpoint, measure_run, measure_synthetic_checkpoint
from helpers.train.recipes import natural_setup, synthetic_run_dir, synthetic_setup, train_natural

if TYPE_CHECKING:
    from plotly.graph_objects import Figure


@dataclass
class DynamicsRun:
    """A trained model's measured run: ``kind`` ("synthetic" / "natural"), its configs, the settings
    table, the training run, one table per measurement (``outer``, ``inner``, ``norms``, and for
    synthetic data ``clustering`` and ``attention``), a provenance caption, the number of validation windows and reference ``floors``."""

    kind: str
    profile: str
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    mcfg: MeasureConfig
    settings: pd.DataFrame
    run: TrainRun
    tables: dict[str, pd.DataFrame]
    caption: str
    n_val: int
    floors: dict[str, float] = field(default_factory=dict)
    data: SyntheticData | None = None

    @property
    def last_epoch(self) -> int:
        """The last measured epoch."""
        return int(self.tables["outer"]["epoch"].max())

    @property
    def norms(self) -> pd.DataFrame:
        """Table 1 statistics over training, tokens at position >= ``min_position``."""
        n = self.tables["norms"]
        return n[n["tokens"] == f"position>={self.mcfg.min_position}"]

    def name(self, stem: str) -> str:
        """Output file name ``06_<stem>_<kind>_<profile>``."""
        return f"06_{stem}_{self.kind}_{self.profile}"


def settings_table(parts: dict[str, dict]) -> pd.DataFrame:
    """One row per (part, setting, value) of ``parts`` {part: {setting: value}}, values as text."""
    return pd.DataFrame([(p, k, str(v)) for p, d in parts.items() for k, v in d.items()],
                        columns=["part", "setting", "value"])


def run_synthetic(profile: Profile = PROFILES["default"], seed: int = 0, cache_dir: str | Path = CACHE_DIR,
                  device: str = "cpu", progress: bool = True) -> DynamicsRun:
    """Train (or reload) the synthetic-task model of ``profile`` and measure every checkpoint."""

    data_cfg, model_cfg, train_cfg = synthetic_setup(profile, seed)
    mcfg = profile.measure
    data = make_dataset(data_cfg)
    run = train_lm(model_cfg, train_cfg, data.train.tokens, data.val.tokens,
                   synthetic_run_dir(cache_dir, data_cfg, model_cfg, train_cfg, profile.name), device=device,
                   progress=progress, description=f"synthetic ({profile.name})")
    tables = measure_run(run.checkpoints, lambda lm: measure_synthetic_checkpoint(lm, data, mcfg), mcfg,
                         kind="synthetic", extra_key={"data": data_cfg.as_dict()}, progress=progress, device=device)
    settings = settings_table({"data": data_cfg.as_dict(), "model (GPT-2)": asdict(model_cfg),
                               "training": asdict(train_cfg), "measurement": asdict(mcfg)})
    caption = (f"GPT-2 architecture, {model_cfg.n_layer} layers, d={model_cfg.n_embd}, trained from scratch; "
               f"synthetic Markov tasks (K={data_cfg.n_tasks}, V={data_cfg.vocab_size}, T={data_cfg.seq_len}); "
               f"profile '{profile.name}'")
    floors = {"oracle": oracle_loss(data.transitions, data.val), "bigram": bigram_loss(data.train, data.val)}
    return DynamicsRun("synthetic", profile.name, model_cfg, train_cfg, mcfg, settings, run, tables, caption,
                       len(data.val), floors, data)


def run_natural(profile: Profile = PROFILES["default"], seed: int = 0, cache_dir: str | Path = CACHE_DIR,
                data_dir: str | Path | None = None, device: str = "cpu", progress: bool = True) -> DynamicsRun:
    """Train (or reload) the natural-text model of ``profile`` (saved for notebooks 02-05 as well) and
    measure every checkpoint: outer loss, inner loss and norm statistics."""

    data, model_cfg, train_cfg = natural_setup(profile, seed)
    mcfg = profile.measure
    run, val = train_natural(profile, cache_dir=cache_dir, data_dir=data_dir, seed=seed, device=device,
                             progress=progress)
    train, _ = natural_windows(data, gpt2_bpe_tokenizer(data["vocab_size"]), data_dir, cache_dir)
    tables = measure_run(run.checkpoints, lambda lm: measure_lm_checkpoint(lm, train, val, mcfg), mcfg,
                         kind="natural", extra_key={"data": data}, progress=progress, device=device)
    settings = settings_table({"data": data, "model (GPT-2)": asdict(model_cfg), "training": asdict(train_cfg)})
    caption = (f"small GPT-2-architecture model ({model_cfg.n_layer} layers, d={model_cfg.n_embd}, GPT-2 BPE "
               f"with {model_cfg.vocab_size} tokens, context {data['seq_len']}), trained from scratch on 1BW "
               f"held-out 10-13 + WikiText-103 validation; profile '{profile.name}'")
    return DynamicsRun("natural", profile.name, model_cfg, train_cfg, mcfg, settings, run, tables, caption, len(val))


def report_settings(r: DynamicsRun, results_dir: str | Path) -> pd.DataFrame:
    """Save and return the settings table (``06_settings_<kind>_<profile>``)."""
    what = ("Synthetic training-dynamics settings" if r.kind == "synthetic"
            else "Natural-text model settings")
    note = "a reconstruction" if r.kind == "synthetic" else "a small model, not GPT-2"
    save_table(r.settings, r.name("settings"), results_dir, caption=f"{what}, profile '{r.profile}' ({note}).")
    return r.settings


def report_losses(r: DynamicsRun, figures_dir: str | Path, results_dir: str | Path) -> tuple[Figure, pd.DataFrame]:
    """Fig. 2 equivalent: inner losses across layers and epochs beside the outer loss and the model's
    own loss on the inner-loss tokens. Returns (figure, table of losses by epoch)."""
    m = r.mcfg
    cap = (f"{r.caption}; inner loss and model's own loss: {m.n_inner} training windows, tokens at position "
           f">= {m.min_position}; outer loss: {m.n_outer} windows, all positions")
    fig = fig_losses(r.tables["outer"], r.tables["inner"], floors=r.floors)
    title = "inner losses (Eq. 14) across layers and epochs, and the outer loss"
    with_caption(fig, f"Natural text: {title}" if r.kind == "natural" else title.capitalize(), cap)
    save_figure(fig, r.name("fig2_losses") if r.kind == "synthetic" else r.name("losses"), figures_dir, caption=cap)
    inner = r.tables["inner"].query("subset == 'all'")
    wide = inner.pivot(index="epoch", columns="layer", values="mean")
    wide.columns = [f"inner, layer {c}" for c in wide.columns]
    own = inner.groupby("epoch")["model_loss"].first().rename("model's own loss (inner tokens)")
    outer = r.tables["outer"].pivot(index="epoch", columns="split", values="loss").add_prefix("outer, ")
    table = pd.concat([outer, own, wide], axis=1).reset_index()
    if r.kind == "synthetic":
        save_table(table, r.name("losses"), results_dir, caption=cap)
    else:
        save_table(r.tables["outer"], r.name("outer"), results_dir, caption=r.caption)
        save_table(r.tables["inner"], r.name("inner"), results_dir, caption=cap)
    return fig, table


def report_clustering(r: DynamicsRun, figures_dir: str | Path, results_dir: str | Path) -> tuple[Figure, pd.DataFrame]:
    """Fig. 1 equivalent: pairwise F1 of KMeans clusters per layer over training, per label type.
    Returns (figure, F1 / ARI / NMI at the first and last epoch)."""
    cap = (f"{r.caption}; KMeans (k = distinct labels) on {r.mcfg.n_cluster} validation tokens per layer; "
           "layer l<L = input of block l, layer L = last block output")
    fig = fig_clustering(r.tables["clustering"], "f1")
    with_caption(fig, "Clustering of hidden states by task, next token and both (pairwise F1)", cap)
    save_figure(fig, r.name("fig1_clustering"), figures_dir, caption=cap)
    save_table(r.tables["clustering"], r.name("clustering"), results_dir, caption=cap)
    c = r.tables["clustering"]
    table = c[c["epoch"].isin([0, r.last_epoch])].pivot_table(index=["label", "layer"], columns="epoch",
                                                                values=["f1", "ari", "nmi"])
    return fig, table


def report_attention(r: DynamicsRun, figures_dir: str | Path, results_dir: str | Path) -> tuple[Figure, pd.DataFrame]:
    """Fig. 3 equivalent at the last epoch: same-label share of the top-k / last-k attended historical
    positions per block (per head, then averaged). Returns (figure, shares at the first and last epoch)."""
    k, seq_len = r.mcfg.top_k, r.data.config.seq_len if r.data is not None else 0
    cap = (f"{r.caption}; epoch {r.last_epoch}; {r.mcfg.n_attention} validation sequences, query = last read "
           f"token, history = the {seq_len - 1} earlier tokens; shares per head, averaged over heads and queries")
    fig = fig_attention(r.tables["attention"], r.last_epoch, k)
    with_caption(fig, f"Attention over history: same-label share of the top-{k} and last-{k} attended", cap)
    save_figure(fig, r.name("fig3_attention"), figures_dir, caption=cap)
    save_table(r.tables["attention"], r.name("attention"), results_dir, caption=cap)
    a = r.tables["attention"]
    table = a[a["epoch"].isin([0, r.last_epoch])].pivot_table(index=["label", "layer"], columns="epoch",
                                                                values=["top", "bottom", "chance", "recent", "mass"])
    return fig, table


def report_norms(r: DynamicsRun, figures_dir: str | Path, results_dir: str | Path) -> tuple[Figure, pd.DataFrame]:
    """Table 1 statistics over training (tokens at position >= min_position, layers 0..L-1).
    Returns (figure, the full norms table)."""
    cap = (f"{r.caption}; {min(r.mcfg.n_norm, r.n_val)} validation windows (their {r.model_cfg.n_positions - 1} read positions), "
           f"tokens at position >= {r.mcfg.min_position}, layers 0..{r.model_cfg.n_layer - 1}")
    fig = fig_norm_stats(r.norms)
    title = "non-decreasing residual norms (Table 1 statistics) over training"
    with_caption(fig, f"Natural text: {title}" if r.kind == "natural" else title.capitalize(), cap)
    save_figure(fig, r.name("norms_over_training"), figures_dir, caption=cap)
    save_table(r.tables["norms"], r.name("norms"), results_dir, caption=cap)
    return fig, r.tables["norms"]


def _fmt(values: Iterable[float]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


def reading_data(r: DynamicsRun) -> str:
    """The synthetic data set: tasks, sizes, entropy rate of every task, oracle and bigram losses."""

    d = r.data
    return (f"* {d.config.n_tasks} tasks over {d.config.vocab_size} tokens; {len(d.train)} training and "
            f"{len(d.val)} validation sequences of {d.config.seq_len} tokens.\n"
            f"* Entropy rate of each task (nats/token): {_fmt(entropy_rate(p) for p in d.transitions)}.\n"
            f"* Oracle loss (true task known) on validation: {r.floors['oracle']:.4f} nats; task-agnostic "
            f"bigram: {r.floors['bigram']:.4f} nats.")


def reading_losses(r: DynamicsRun) -> str:
    """What Fig. 2 shows: outer loss at the start and end, inner loss by layer, the model's own loss on
    the same tokens and how far the last layer's inner loss is from it."""
    out = r.tables["outer"].set_index(["epoch", "split"])["loss"]
    inner = r.tables["inner"].query("subset == 'all'")
    e0, e1 = 0, r.last_epoch
    floors = "; ".join(f"{k} {v:.3f}" for k, v in r.floors.items())
    lines = [f"* Outer loss (validation, all positions): {out[(e0, 'val')]:.3f} at initialisation, "
             f"{out[(e1, 'val')]:.3f} after {e1} epochs (training: {out[(e1, 'train')]:.3f})"
             + (f"; {floors}." if floors else ".")]
    for ep in (e0, e1):
        d = inner[inner["epoch"] == ep].sort_values("layer")
        steps = np.diff(d["mean"].to_numpy())
        lines.append(f"* Epoch {ep}: inner loss by layer {_fmt(d['mean'])}, decreasing at {int((steps < 0).sum())} "
                     f"of {len(steps)} layer steps; the model's own loss on the same tokens "
                     f"{d['model_loss'].iloc[0]:.3f}.")
    last = inner[inner["layer"] == inner["layer"].max()]
    gap = float((last["mean"] - last["model_loss"]).abs().max())
    lines.append(f"* The last layer's inner loss equals the model's own loss on the same tokens at every epoch "
                 f"(largest difference {gap:.1e} nats); the outer loss differs from both because it averages "
                 f"other tokens ({r.mcfg.n_outer} windows, every read position, including the first "
                 f"{r.mcfg.min_position}, where the context says least).")
    return "\n".join(lines)


def reading_clustering(r: DynamicsRun) -> str:
    """What Fig. 1 shows: F1 by layer at initialisation and at the end, per label type, with chance."""
    c = r.tables["clustering"]
    lines = []
    for kind in (k for k in LABEL_KINDS if k in set(c["label"])):
        a = c[(c["label"] == kind) & (c["epoch"] == 0)].sort_values("layer")
        b = c[(c["label"] == kind) & (c["epoch"] == r.last_epoch)].sort_values("layer")
        lines.append(f"* Clustering F1 by '{kind}', layers 0..{r.model_cfg.n_layer}: epoch 0 {_fmt(a['f1'])}, "
                     f"epoch {r.last_epoch} {_fmt(b['f1'])} (chance about {b['f1_chance'].mean():.3f}; best layer "
                     f"at the end: {int(b.loc[b['f1'].idxmax(), 'layer'])}).")
    return "\n".join(lines)


def reading_attention(r: DynamicsRun) -> str:
    """What Fig. 3 shows at the last epoch: top-k / last-k same-label shares per block against chance
    and the recency control."""
    a = r.tables["attention"]
    a = a[a["epoch"] == r.last_epoch]
    k = r.mcfg.top_k
    lines = []
    for kind in (x for x in LABEL_KINDS if x in set(a["label"])):
        d = a[a["label"] == kind].sort_values("layer")
        above = int((d["top"] > d["chance"]).sum())
        beyond = int((d["top"] > d["recent"]).sum())
        lines.append(f"* Label '{kind}', blocks 0..{len(d) - 1}, epoch {r.last_epoch}: top-{k} {_fmt(d['top'])}, "
                     f"last-{k} {_fmt(d['bottom'])}, chance {_fmt(d['chance'])}, {k} nearest positions "
                     f"{_fmt(d['recent'])}; top-{k} above chance in {above} of {len(d)} blocks, above the "
                     f"recency control in {beyond}.")
    return "\n".join(lines)


def reading_norms(r: DynamicsRun) -> str:
    """Table 1 statistics at initialisation and at the end of training, with chance."""
    n = r.norms.set_index("epoch")
    return (f"* Norms non-decreasing over layers 0..{r.model_cfg.n_layer - 1} ({r.kind}): sequence level "
            f"{n['sequence_pct'].iloc[0]:.1f}% at initialisation, {n['sequence_pct'].iloc[-1]:.1f}% after "
            f"{r.last_epoch} epochs (chance {n['chance_pct'].iloc[-1]:.1f}%); pair level {n['pair_pct'].iloc[0]:.1f}% "
            f"-> {n['pair_pct'].iloc[-1]:.1f}% (chance 50%).")


def reading_training(r: DynamicsRun) -> str:
    """How much training this run did now and where it lives."""
    h = r.run.history
    return (f"* {r.kind.capitalize()} model: {len(r.run.checkpoints)} checkpoints (epochs 0..{int(h['epoch'].max())}); "
            f"{r.run.trained_epochs_now} epochs trained now in {r.run.seconds_now:.0f} s (0 = reused from "
            f"`{r.run.run_dir}`); validation loss {h['val_loss'].iloc[0]:.3f} -> {h['val_loss'].iloc[-1]:.3f}."
            + (f" {r.run.extra['n_train_tokens']:,} training tokens per epoch; the saved model + tokenizer for "
               f"notebooks 02-05: `{r.run.extra['final_dir']}`." if "final_dir" in r.run.extra else ""))
