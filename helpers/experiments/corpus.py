"""Notebook 01: the paper's filtering of the test corpora (Sec. 5.1), counted rule by rule, the token lengths of the
filtered texts under a model's tokenizer, and a few examples."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from helpers.corpus.samples import MIN_WORDS, SAMPLE_SEED, filtered_samples
from helpers.lm.load import load_tokenizer
from helpers.paths import FILTERED_DIR
from helpers.report.figures import dataset_color
from helpers.report.output import save_figure, save_table, with_caption

N_LENGTHS = 2000  # texts per dataset in the length histogram


@dataclass
class CorpusRun:
    """The filtered texts per dataset, the counts before and after each rule, and token lengths under ``model``."""

    samples: dict[str, list[str]]
    counts: pd.DataFrame
    lengths: dict[str, list[int]]
    model: str
    min_words: int
    seed: int


def run(datasets: list[str], model: str, filtered_dir: str = FILTERED_DIR, data_dir: str | None = None,
        min_words: int = MIN_WORDS, seed: int = SAMPLE_SEED) -> CorpusRun:
    """Filter (or read the keyed cache of) every dataset and measure the first texts' token lengths."""
    samples, counts = {}, []
    for ds in datasets:
        texts, rep = filtered_samples(ds, filtered_dir, data_dir, min_words=min_words, seed=seed)
        samples[ds] = texts
        counts.append(rep.as_dict())
    tok = load_tokenizer(model)
    lengths = {ds: [len(r) for r in tok(texts[:N_LENGTHS])["input_ids"]] for ds, texts in samples.items()}
    return CorpusRun(samples, pd.DataFrame(counts), lengths, model, min_words, seed)


def report_counts(r: CorpusRun, results_dir: str) -> tuple[None, pd.DataFrame]:
    """The filtering counts, saved as ``01_filter_counts``."""
    save_table(r.counts, "01_filter_counts", results_dir,
               caption=f"Filtering counts (min {r.min_words} words; 1BW: 5,000 samples, seed {r.seed}).")
    return None, r.counts


def report_lengths(r: CorpusRun, figures_dir: str) -> tuple[go.Figure, pd.DataFrame]:
    """Histogram of token lengths per dataset (saved as ``01_token_lengths``) and their quartiles."""
    fig = go.Figure([go.Histogram(x=v, name=ds, opacity=0.6, nbinsx=60, marker_color=dataset_color(ds))
                     for ds, v in r.lengths.items()])
    fig.update_layout(barmode="overlay", xaxis_title="tokens per text", yaxis_title="texts")
    with_caption(fig, "Token lengths of the filtered texts",
                 f"tokenizer: {r.model}; first {N_LENGTHS:,} filtered texts per dataset; min {r.min_words} words")
    save_figure(fig, "01_token_lengths", figures_dir)
    table = pd.DataFrame({ds: pd.Series(v).describe()[["count", "25%", "50%", "75%", "max"]]
                          for ds, v in r.lengths.items()}).T
    return fig, table


def reading(r: CorpusRun, n_examples: int = 3) -> str:
    """Median lengths per dataset and a few examples of each, as Markdown."""
    lines = ["**Reading.** Median tokens per text: " + ", ".join(
        f"{ds} {pd.Series(v).median():.0f}" for ds, v in r.lengths.items()) + f" ({r.model}'s tokenizer)."]
    for ds, texts in r.samples.items():
        lines.append(f"\n**{ds}** examples:\n\n" + "\n".join(f"> {t[:300]}\n" for t in texts[:n_examples]))
    return "\n".join(lines)
