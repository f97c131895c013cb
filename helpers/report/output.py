"""Figures saved as interactive HTML and static PNG, tables as CSV and Markdown, each with its caption (model,
data, sample count, filter).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pandas as pd

from helpers.paths import atomic_write_text, repo_path

_PNG_HINT = (
    "static PNG export needs Chrome or Chromium for kaleido: install it (Debian/Ubuntu: "
    "`apt-get install chromium`; elsewhere: `plotly_get_chrome`) - the HTML figures were written"
)


_png_warned = False


def browser_available() -> bool:
    """Whether kaleido can find a Chrome/Chromium binary."""
    return any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome"))


def short_provenance(caption: str, width: int = 130) -> str:
    """One short line from a provenance caption ``model; note | data: counts | filter``: the first clause
    of each part, joined with ' · ', cut at ``width`` characters."""
    parts = [p.split(";")[0].strip() for p in caption.split(" | ") if p.strip()]
    line = " · ".join(parts)
    return line if len(line) <= width else line[: width - 1] + "…"


def with_caption(fig, title: str, caption: str):
    """Title line + one short provenance line on ``fig``; the full caption (model, weights, data, sample
    count, filter) is on the hover of a '[provenance: hover]' note in the HTML, and in the table captions."""
    full = caption.replace(" | ", "<br>")
    fig.update_layout(
        title={"text": f"{title}<br><sup>{short_provenance(caption)}</sup>", "x": 0.01, "y": 0.97,
               "yref": "container", "yanchor": "top"},
        margin={"t": 95},
        template="plotly_white",
        meta={"caption": caption},
    )
    fig.add_annotation(text="[provenance: hover]", hovertext=full, showarrow=False, xref="paper", yref="paper",
                       x=1.0, y=1.07, xanchor="right", yanchor="bottom", font={"size": 10, "color": "#777"})
    return fig


def save_figure(fig, name: str, figures_dir: str | Path, caption: str | None = None, png: bool = True) -> list[Path]:
    """Write ``figures_dir/name.html`` (interactive) and, with ``png``, ``name.png`` (static; skipped with one
    warning saying what to install when no browser exists). Returns the paths written."""
    global _png_warned
    out = repo_path(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    if caption and not (fig.layout.meta and "caption" in fig.layout.meta):  # not already put there by with_caption
        with_caption(fig, fig.layout.title.text or "", caption)
    html = out / f"{name}.html"
    fig.write_html(html, include_plotlyjs="cdn")
    paths = [html]
    if png and browser_available():
        png = out / f"{name}.png"
        fig.write_image(png, width=1000, height=680, scale=1)
        paths.append(png)
    elif png and not _png_warned:
        warnings.warn(_PNG_HINT, stacklevel=2)
        _png_warned = True
    return paths


def markdown_table(df: pd.DataFrame) -> str:
    """Markdown for readers: whole-number columns as integers with thousands separators, other numbers to 4
    significant digits, and empty cells (not 'nan') where a row has no value."""
    out = df.copy()
    for col in out.columns:
        values = out[col]
        if values.dtype.kind not in "fi":
            out[col] = values.where(values.notna(), "")
            continue
        finite = values.dropna()
        whole = len(finite) > 0 and bool((finite == finite.round()).all()) and finite.abs().max() < 1e15
        out[col] = [("" if pd.isna(v) else f"{int(v):,}" if whole else f"{v:.4g}") for v in values]
    return out.to_markdown(index=False, disable_numparse=True)


def save_table(df: pd.DataFrame, name: str, results_dir: str | Path, caption: str = "") -> list[Path]:
    """Write ``results_dir/name.csv`` and ``name.md`` (Markdown with the caption above the table)."""
    out = repo_path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / f"{name}.csv"
    md = out / f"{name}.md"
    atomic_write_text(csv, df.to_csv(index=False))
    body = (f"{caption}\n\n" if caption else "") + markdown_table(df) + "\n"
    atomic_write_text(md, body)
    return [csv, md]
