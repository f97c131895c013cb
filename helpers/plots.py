"""Plotly figures saved as interactive HTML and static PNG; tables saved as CSV and Markdown."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pandas as pd

from helpers.store import atomic_write_text, repo_path

_PNG_HINT = (
    "static PNG export needs Chrome or Chromium for kaleido: install it (Debian/Ubuntu: "
    "`apt-get install chromium`; elsewhere: `plotly_get_chrome`) - the HTML figures were written"
)
_png_warned = False


def browser_available() -> bool:
    """Whether kaleido can find a Chrome/Chromium binary."""
    return any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome"))


def with_caption(fig, title: str, caption: str):
    """Put a title and a provenance caption (model, data, sample count, filter) on ``fig``."""
    fig.update_layout(
        title={"text": f"{title}<br><sup>{caption.replace(' | ', '<br>').replace('; ', ';<br>', 1)}</sup>", "x": 0.01,
               "y": 0.96, "yref": "container", "yanchor": "top"},
        margin={"t": 175},
        template="plotly_white",
    )
    return fig


def save_figure(fig, name: str, figures_dir: str | Path, caption: str | None = None) -> list[Path]:
    """Write ``figures_dir/name.html`` (interactive) and ``name.png`` (static; skipped with one warning
    saying what to install when no browser exists). Returns the paths written."""
    global _png_warned
    out = repo_path(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = fig.layout.title.text or ""
    if caption and caption.split(";")[0].split(" | ")[0] not in title:  # not already put there by with_caption
        wrapped = caption.replace(" | ", "<br>")
        fig.update_layout(title={"text": f"{title}<br><sup>{wrapped}</sup>" if title else f"<sup>{wrapped}</sup>"},
                          margin={"t": 130})
    html = out / f"{name}.html"
    fig.write_html(html, include_plotlyjs="cdn")
    paths = [html]
    if browser_available():
        png = out / f"{name}.png"
        fig.write_image(png, width=1000, height=680, scale=1)
        paths.append(png)
    elif not _png_warned:
        warnings.warn(_PNG_HINT, stacklevel=2)
        _png_warned = True
    return paths


def save_table(df: pd.DataFrame, name: str, results_dir: str | Path, caption: str = "") -> list[Path]:
    """Write ``results_dir/name.csv`` and ``name.md`` (Markdown with the caption above the table)."""
    out = repo_path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / f"{name}.csv"
    md = out / f"{name}.md"
    atomic_write_text(csv, df.to_csv(index=False))
    body = (f"{caption}\n\n" if caption else "") + df.to_markdown(index=False, floatfmt=".4g") + "\n"
    atomic_write_text(md, body)
    return [csv, md]


def trajectory_figure(coords, explained=None):
    """Interactive 3-D figure: one line per sample through its layers in order, layer index on hover."""
    import plotly.colors as pc
    import plotly.graph_objects as go

    palette = pc.qualitative.Dark24
    fig = go.Figure()
    for i, traj in enumerate(coords):
        fig.add_trace(
            go.Scatter3d(
                x=traj[:, 0], y=traj[:, 1], z=traj[:, 2], mode="lines+markers",
                line={"color": palette[i % len(palette)], "width": 3},
                marker={"size": [6] + [2] * (len(traj) - 2) + [5], "color": palette[i % len(palette)]},
                customdata=list(range(len(traj))), hovertemplate="sample " + str(i) + "<br>layer %{customdata}<extra></extra>",
                showlegend=False,
            )
        )
    labels = [f"PC{j + 1}" + (f" ({100 * explained[j]:.1f}%)" if explained is not None else "") for j in range(3)]
    fig.update_layout(scene={"xaxis_title": labels[0], "yaxis_title": labels[1], "zaxis_title": labels[2]}, height=650)
    return fig
