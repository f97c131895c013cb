"""Figures saved as interactive HTML and static PNG, tables as CSV and Markdown, each with its caption (model,
data, sample count, filter).
"""

from __future__ import annotations

import atexit
import os
import re
import warnings
from pathlib import Path

import kaleido
import pandas as pd
from choreographer.browsers.chromium import Chromium

from helpers.paths import atomic_write_text, repo_path, write_csv

PNG_HINT = (
    "static PNG export needs Chrome or Chromium for kaleido: install it (Debian/Ubuntu: `apt-get install chromium`; "
    "elsewhere: `plotly_get_chrome`) or point BROWSER_PATH at one - the HTML figures are written, the PNGs are not"
)
PNG_NOTICE_ENV = "METALEARN_PNG_NOTICE_GIVEN"  # set by `python -m helpers notebook` once it has said so itself


_png_warned = False
_png_server = False


def find_browser() -> str | None:
    """The Chrome/Chromium binary kaleido would start, found the way kaleido finds it (choreographer's search):
    ``BROWSER_PATH``, the copy ``plotly_get_chrome`` / ``kaleido.get_chrome_sync`` downloads, the usual names
    on PATH, then the usual install places (Chrome on macOS, Program Files on Windows); None if it finds none or
    the file it names cannot be run."""
    path = Chromium.find_browser(skip_local=False)
    return path if path and os.path.isfile(path) and os.access(path, os.X_OK) else None


def browser_available() -> bool:
    """Whether kaleido can find a Chrome/Chromium binary to export PNGs with."""
    return find_browser() is not None


def _write_png(fig, path: Path) -> None:
    """Static export through one browser kept open for the whole process (kaleido's sync server: ~0.4 s a
    figure instead of ~4 s for starting a browser per figure), closed at exit."""
    global _png_server
    if not _png_server:
        kaleido.start_sync_server(silence_warnings=True)
        atexit.register(kaleido.stop_sync_server, silence_warnings=True)
        _png_server = True
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The kopts argument is ignored")
        fig.write_image(path, width=int(fig.layout.width or 1000), height=int(fig.layout.height or 680), scale=1)


SUBTITLE_WIDTH = 150  # characters per subtitle line at the PNG's 1000-pixel width


def subtitle_lines(caption: str, width: int = SUBTITLE_WIDTH, max_lines: int = 2) -> list[str]:
    """A provenance caption ``model; note | data: counts | filter | ...`` as at most ``max_lines`` lines of at most
    ``width`` characters, nothing cut: the parts go in order, joined with ' · '. While they do not fit, the longest
    part drops its last ';' clause (each part keeps at least its first); a first clause too long for a line wraps
    at spaces onto a further line."""
    clauses = [[c.strip() for c in p.split(";") if c.strip()] for p in caption.split(" | ") if p.strip()]
    while True:
        lines: list[str] = []
        for piece in ("; ".join(c) for c in clauses):
            if lines and len(lines[-1]) + 3 + len(piece) <= width:
                lines[-1] = f"{lines[-1]} · {piece}"
            else:
                lines += _wrap(piece, width)
        longer = [c for c in clauses if len(c) > 1]
        if len(lines) <= max_lines or not longer:
            return lines
        max(longer, key=lambda c: len("; ".join(c))).pop()


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken after a comma where it can (a phrase such as
    'first 64 tokens of each' stays on one line), else at a space."""
    lines, cur = [], ""
    for phrase in (p + ("," if i < len(parts) - 1 else "") for parts in [text.split(", ")]
                   for i, p in enumerate(parts)):
        joined = f"{cur} {phrase}".strip()
        if len(joined) <= width:
            cur = joined
            continue
        if cur:
            lines.append(cur)
        cur = ""
        for word in phrase.split():  # a phrase longer than a line: at spaces
            if cur and len(cur) + 1 + len(word) > width:
                lines.append(cur)
                cur = word
            else:
                cur = f"{cur} {word}".strip()
    return lines + ([cur] if cur else [])


def with_caption(fig, title: str, caption: str):
    """Title and a provenance subtitle (model, data, sample, filter, profile) of at most two lines that fit the
    figure's width (:func:`subtitle_lines`, set the width first); the full caption is kept in the figure's
    metadata and the table captions."""
    lines = subtitle_lines(caption, int(SUBTITLE_WIDTH * (fig.layout.width or 1000) / 1000))
    fig.update_layout(
        title={"text": f"{title}<br><sup>{'<br>'.join(lines)}</sup>", "x": 0.01, "y": 0.97,
               "yref": "container", "yanchor": "top", "pad": {"t": 6}},
        margin={"t": 90 + 18 * len(lines)},
        template="plotly_white",
        meta={"caption": caption},
    )
    return fig


def save_figure(fig, name: str, figures_dir: str | Path, caption: str | None = None, png: bool = True) -> list[Path]:
    """Write ``figures_dir/name.html`` (interactive; plotly.js is stored once beside the figures, so they open
    offline, and the plot's element id is its name, so a rerun that changes nothing changes no byte) and, with
    ``png``, ``name.png`` (static; skipped with one warning saying what to install when no browser exists)."""
    global _png_warned
    out = repo_path(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    if caption and not (fig.layout.meta and "caption" in fig.layout.meta):  # not already put there by with_caption
        with_caption(fig, fig.layout.title.text or "", caption)
    html = out / f"{name}.html"
    atomic_write_text(html, fig.to_html(include_plotlyjs="directory", div_id=name.replace(".", "_")))
    if not (out / "plotly.min.js").is_file():
        fig.write_html(out / ".plotly-js-writer.html", include_plotlyjs="directory")  # writes plotly.min.js once
        (out / ".plotly-js-writer.html").unlink()
    paths = [html]
    if png and browser_available():
        png = out / f"{name}.png"
        _write_png(fig, png)
        paths.append(png)
    elif png and not _png_warned:
        if not os.environ.get(PNG_NOTICE_ENV):  # `make reproduce` said it once for every notebook
            warnings.warn(PNG_HINT, stacklevel=2)
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
    """Write ``results_dir/name.csv`` (:func:`~helpers.paths.write_csv`: numbers at 6 significant digits) and
    ``name.md`` (Markdown with the caption above the table)."""
    out = repo_path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / f"{name}.csv"
    md = out / f"{name}.md"
    write_csv(df, csv)
    body = (f"{caption}\n\n" if caption else "") + markdown_table(df) + "\n"
    atomic_write_text(md, body)
    return [csv, md]


def replace_between(text: str, start: str, end: str, block: str) -> str:
    """``text`` with everything between the markers ``start`` and ``end`` replaced by ``block`` (unchanged when
    ``start`` is absent): how README's generated sections are refreshed."""
    if start not in text:
        return text
    return re.sub(f"{re.escape(start)}.*{re.escape(end)}", lambda _: f"{start}\n{block}\n{end}", text, flags=re.S)
