"""Tables, captions and the rendered reading of the eigenvalue check (notebook 05).

Table 2 (:func:`table2`) lists only the constructions that are analogues of the paper's
(:data:`helpers.surrogates.constructions.PAPER_ANALOGUES`); the exact Jacobian is reported only against
the real block (:func:`agreement_table`): in a pre-norm block ``J z_n ~ z_n`` by construction, so its
Proposition 1 verdict says nothing the paper's 100% could be compared with. Every sentence of
:func:`reading_markdown` that states a result is built from the numbers it is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.config import EigenProfile
from helpers.paths import repo_path, write_csv
from helpers.surrogates.constructions import PAPER_ANALOGUES

PAPER_TABLE2 = {"wikitext-103": 100.0, "1bw": 100.0}
"""Table 2: share (%) of GPT-2's constructed matrices that meet Proposition 1's condition."""

JACOBIAN_NOTE = ("The exact Jacobian is reported only here, not in Table 2: in a pre-norm block the normalised input "
                 "is scale-invariant, so J z_n ~ z_n by construction and its Proposition 1 verdict is no analogue of "
                 "the paper's.")
_ANALOGUE_NOTE = ("Only the analogues of the paper's construction are listed (linear = Eq. 10-12; frozen = the same "
                  "with the FFN activation frozen at the current token); the exact Jacobian is compared with the real "
                  "block in 05_surrogate_agreement.")


def _keys(df: pd.DataFrame) -> list[str]:
    return [k for k in ("model", "dataset", "options") if k in df.columns] + ["construction"]


def analogue_rows(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """The rows of constructions that are analogues of the paper's Table 2 (``PAPER_ANALOGUES``)."""
    df = pd.DataFrame(rows)
    return df[df["construction"].isin(PAPER_ANALOGUES)] if len(df) else df


def table2(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """Table 2-style percentages: share (%) of matrices meeting Proposition 1 per layer and overall.

    Input: rows from :func:`helpers.surrogates.experiment.eigen_records` (list or DataFrame, may carry
    extra ``model`` / ``dataset`` / ``options`` columns). Rows of constructions that are not analogues of
    the paper's (the Jacobian) are left out. Output: a DataFrame indexed by the grouping columns and
    ``construction``, one column per layer plus ``overall`` and ``n`` (matrices).
    """
    df = analogue_rows(rows)
    if df.empty:
        return pd.DataFrame(columns=["overall", "n"])
    keys = _keys(df)
    per_layer = df.pivot_table(index=keys, columns="layer", values="meets", aggfunc="mean") * 100.0
    per_layer.columns = [f"L{c}" for c in per_layer.columns]
    overall = df.groupby(keys)["meets"].agg(["mean", "size"])
    per_layer["overall"] = overall["mean"] * 100.0
    per_layer["n"] = overall["size"]
    return per_layer


def table2_with_paper(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """:func:`table2` as columns, with the paper's GPT-2 value per dataset (``paper_GPT-2_%``) after ``overall``."""
    t2 = table2(rows).reset_index()
    if "dataset" in t2.columns:
        t2.insert(t2.columns.get_loc("overall") + 1, "paper_GPT-2_%", t2["dataset"].map(PAPER_TABLE2))
    return t2


def agreement_table(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """How well each surrogate predicts the real block: verdict agreement and norm-ratio fit.

    Per grouping (``model``, ``dataset``, ``options`` if present) and construction, the Jacobian
    included: ``meets_%`` (Proposition 1 holds), ``real_grows_%`` (the real block does not shrink the
    norm), ``agree_%`` (same verdict), ``agree_when_real_shrinks_%``, Spearman correlation of the
    surrogate's and the real ratio, the median absolute log-ratio error and ``n``.
    """
    from scipy.stats import spearmanr

    df = pd.DataFrame(rows)
    keys = _keys(df)
    out = []
    for key, g in df.groupby(keys):
        shrink = g[~g["real_grows"]]
        rho = spearmanr(g["ratio"], g["real_ratio"]).statistic if len(g) > 2 else math.nan
        out.append(dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)) | {
            "meets_%": 100.0 * g["meets"].mean(),
            "real_grows_%": 100.0 * g["real_grows"].mean(),
            "agree_%": 100.0 * g["agrees"].mean(),
            "agree_when_real_shrinks_%": 100.0 * shrink["agrees"].mean() if len(shrink) else math.nan,
            "real_shrinks": len(shrink),
            "spearman_ratio": float(rho),
            "median_abs_log_ratio_error": median_abs_log_error(g),
            "n": len(g),
        })
    return pd.DataFrame(out).set_index(keys)


def median_abs_log_error(g: pd.DataFrame) -> float:
    """Median of ``|log ratio - log real_ratio|`` over the rows of ``g`` (NaN when empty)."""
    return float(np.median(np.abs(np.log(g["ratio"]) - np.log(g["real_ratio"])))) if len(g) else math.nan


def save_records(records: pd.DataFrame, results_dir: str | Path, name: str = "05_records") -> Path:
    """Write the run's rows to ``results_dir/name.csv`` (relative to the repository root) through the one table
    writer (6 significant digits) and return the path."""
    return write_csv(records, repo_path(results_dir) / f"{name}.csv")


def spectra_frame(spectra: dict) -> pd.DataFrame:
    """Eigenvalues from :func:`~helpers.surrogates.experiment.eigen_records` as a long DataFrame
    (sample, layer, construction, rank, eigenvalue); ``rank`` 0 is the largest eigenvalue."""
    parts = []
    for (s, layer, name), lam in spectra.items():
        desc = np.sort(np.asarray(lam))[::-1]
        parts.append(pd.DataFrame({"sample": s, "layer": layer, "construction": name,
                                   "rank": np.arange(len(desc)), "eigenvalue": desc}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


# --------------------------------------------------------------------------- captions


@dataclass(frozen=True)
class Provenance:
    """What a table or figure of notebook 05 was computed on: models (label -> ``describe()``), datasets,
    texts per dataset, tokens kept per text and the profile."""

    models: dict[str, str]
    datasets: tuple[str, ...]
    n_samples: int
    max_tokens: int
    profile: str

    @classmethod
    def of(cls, models: Sequence, datasets: Sequence[str], n_samples: int, max_tokens: int,
           profile: str) -> Provenance:
        """Provenance of a run on ``models`` (:class:`~helpers.lm.load.LoadedModel`)."""
        return cls({m.label: m.describe() for m in models}, tuple(datasets), n_samples, max_tokens, profile)

    @property
    def table(self) -> str:
        """Caption tail of a table (one line, ``|`` between parts)."""
        return (f"{'; '.join(self.models.values())} | {', '.join(self.datasets)}: {self.n_samples} texts each (>= 10 "
                f"words, WikiText headings dropped, 1BW 5,000-sentence seeded sample), truncated to {self.max_tokens} "
                f"tokens; current token = last kept token | profile {self.profile}")

    @property
    def figure(self) -> str:
        """Caption of a figure over all models (``|`` between parts, as :func:`~helpers.report.output.with_caption`
        lays them out)."""
        return (" | ".join(self.models.values()) + f" | {', '.join(self.datasets)}: {self.n_samples} texts each, "
                f"<= {self.max_tokens} tokens, current token = last | profile {self.profile}")

    def per_model(self, label: str) -> str:
        """Caption of a figure of one model on all datasets."""
        return (self.models[label] + f" | {', '.join(self.datasets)}: {self.n_samples} texts each, "
                f"<= {self.max_tokens} tokens | profile {self.profile}")

    def first_text(self, label: str) -> str:
        """Caption of a figure of one model's first text of the first dataset."""
        return (self.models[label] + f" | {self.datasets[0]}: first of {self.n_samples} texts, "
                f"<= {self.max_tokens} tokens | profile {self.profile}")


def table_caption(name: str, prov: Provenance, prof: EigenProfile | None = None) -> str:
    """The caption of results table ``name`` (``05_table2_per_layer``, ``05_table2_overall``,
    ``05_surrogate_agreement`` or ``05_option_ablation``, which needs ``prof``)."""
    if name == "05_table2_per_layer":
        head = ("Table 2-style: % of constructed matrices meeting Proposition 1, per layer (L0 = first block) and "
                f"overall; the paper's value is for GPT-2 (124M). {_ANALOGUE_NOTE} ")
    elif name == "05_table2_overall":
        head = f"Table 2-style overall: % of matrices meeting Proposition 1. {_ANALOGUE_NOTE} "
    elif name == "05_surrogate_agreement":
        head = ("How well each surrogate predicts the real block: meets_% = Proposition 1 holds; real_grows_% = the "
                "real block does not shrink ||z_n||; agree_% = same verdict; Spearman correlation and median |log "
                f"ratio error| between the surrogate's ||W z_n||/||z_n|| and the real ratio. {JACOBIAN_NOTE} ")
    elif name == "05_option_ablation":
        if prof is None:
            raise ValueError("the option ablation's caption needs the eigen profile")
        head = (f"Effect of each omission on the linear surrogates ({prov.datasets[0]}, {prof.ablation_samples} "
                f"text(s), layer stride {prof.ablation_layer_stride}): layernorm = norms frozen at the current token, "
                "bias = affine surrogate (biases and norm offsets kept), scale = softmax scale, rotary = rotary "
                "embeddings at the real positions. ")
    else:
        raise ValueError(f"no caption for table '{name}'")
    return head + prov.table
