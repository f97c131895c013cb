"""Figure and table writers: subtitles that fit without cutting anything, HTML that a rerun reproduces byte for
byte and that opens offline, CSVs at a stated precision."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from helpers.paths import CSV_DIGITS
from helpers.report.output import (
    SUBTITLE_WIDTH,
    save_figure,
    save_table,
    subtitle_lines,
    with_caption,
)

CAPTION = ("SmolLM2-135M-Instruct (llama, 30 layers); Q4_1 GGUF dequantised to float: an approximation of the "
           "released weights; max 64 tokens/text | wikitext-103: 40 texts, 2392 tokens | positions >= 5; lens on "
           "tokens with final loss <= 1 and a seeded random 10% of all tokens | profile default")


def test_subtitle_fits_in_two_lines_and_cuts_nothing():
    lines = subtitle_lines(CAPTION)
    assert 1 <= len(lines) <= 2 and all(len(line) <= SUBTITLE_WIDTH for line in lines)
    text = " ".join(lines)
    assert "…" not in text and "..." not in text
    for part in CAPTION.split(" | "):  # every part keeps at least its first clause, whole
        assert part.split(";")[0].strip() in text


def test_long_parts_wrap_instead_of_being_cut():
    long = " ".join(f"word{i}" for i in range(80))
    lines = subtitle_lines(long, width=60, max_lines=2)
    assert " ".join(lines) == long and all(len(line) <= 60 for line in lines)


def test_html_is_reproducible_and_offline(tmp_path):
    def draw(folder):
        fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2]))
        with_caption(fig, "A title", CAPTION)
        return save_figure(fig, "01_example", folder, png=False)[0]

    a, b = draw(tmp_path / "a"), draw(tmp_path / "b")
    assert a.read_bytes() == b.read_bytes(), "a rerun that changes nothing must not change the HTML"
    html = a.read_text()
    assert '<script charset="utf-8" src="plotly.min.js">' in html and "cdn.plot.ly" not in html
    assert (a.parent / "plotly.min.js").stat().st_size > 1_000_000
    assert "[provenance: hover]" not in html


def test_csv_numbers_have_the_stated_precision(tmp_path):
    df = pd.DataFrame({"x": [1 / 3, 2.0, 123456.789012], "n": [1, 2, 3]})
    csv, _ = save_table(df, "t", tmp_path)
    back = pd.read_csv(csv)
    assert back.x.iloc[0] == float(f"{1 / 3:.{CSV_DIGITS}g}") and back.n.tolist() == [1, 2, 3]
    assert csv.read_text().splitlines()[1] == f"{1 / 3:.{CSV_DIGITS}g},1"


def test_subtitle_trims_only_the_longest_parts():
    """Only as many trailing clauses go as the two lines need, longest part first: the short parts stay whole."""
    caption = ("SmolLM2-135M-Instruct (llama, 30 layers); Q4_1 GGUF dequantised to float: an approximation of the "
               "released weights | wikitext-103: 240 texts, 35642 tokens | positions >= 5; 8.5% of tokens have final "
               "loss <= 1; lens on tokens with final loss <= 1 and a seeded random 10% of all tokens | profile default")
    text = " ".join(subtitle_lines(caption))
    assert "profile default" in text and "8.5% of tokens have final loss <= 1" in text
    assert "seeded random 10%" not in text  # the longest part gave up its last clause
    assert subtitle_lines("a; b | c", width=20) == ["a; b · c"]  # fits: nothing dropped


def test_subtitle_lines_break_between_phrases_and_use_a_wide_figure_s_width():
    """08_scale's subtitle broke 'first 64 / tokens of each': lines now end after a comma where they can, and a
    1300-pixel figure gets 1.3 times the characters per line."""
    caption = ("the same texts for every model: 40 WikiText-103 test paragraphs and 100 1BW test sentences (seeded "
               "sample after the paper's filtering), first 64 tokens of each, tokens at positions >= 5")
    lines = subtitle_lines(caption)
    assert " ".join(lines) == caption and all(line.endswith(",") for line in lines[:-1])
    assert not any(line.endswith("first 64") for line in lines)
    fig = with_caption(go.Figure(layout={"width": 1300}), "t", caption)
    assert "<br>" not in fig.layout.title.text.split("<sup>")[1]  # one line at 1300 px


PNG_SCRIPT = """
import sys
import plotly.graph_objects as go
from helpers.report.output import find_browser, save_figure
print(find_browser())
paths = save_figure(go.Figure(go.Bar(x=[1, 2], y=[2, 1])), "png_probe", sys.argv[1], caption="a | b")
print(" ".join(p.suffix for p in paths))
"""


def _browser_only_through(tmp_path, browser_path: str) -> dict:
    """An environment in which the only way to a browser is ``BROWSER_PATH``: no browser on PATH (only the
    venv's Python), and HOME elsewhere (no ``plotly_get_chrome`` download)."""
    import os
    import sys

    home = tmp_path / "home"
    home.mkdir()
    return {**os.environ, "PATH": str(Path(sys.executable).parent), "HOME": str(home),
            "XDG_DATA_HOME": str(home), "BROWSER_PATH": browser_path}


def test_a_browser_found_only_through_browser_path_gives_pngs(tmp_path):
    """kaleido honours BROWSER_PATH, so must the check that decides whether PNGs are written (it used to look
    only for four names on PATH, and the README's remedy never gave PNGs). The browser is reached through a
    link of an unusual name, which neither PATH nor the usual install places hold."""
    import shutil
    import subprocess
    import sys

    real = shutil.which("chromium") or shutil.which("google-chrome") or shutil.which("chromium-browser")
    assert real, "this test needs Chrome or Chromium on the machine (.ci/run installs Debian's chromium)"
    link = tmp_path / "my-browser"
    link.symlink_to(real)
    proc = subprocess.run([sys.executable, "-c", PNG_SCRIPT, str(tmp_path / "figs")], capture_output=True,
                          text=True, env=_browser_only_through(tmp_path, str(link)), timeout=120)
    assert proc.returncode == 0, proc.stderr
    found, suffixes = proc.stdout.split("\n")[:2]
    assert found == str(link) and suffixes == ".html .png"
    assert (tmp_path / "figs" / "png_probe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_browser_path_that_is_not_a_browser_gives_html_and_one_warning(tmp_path):
    """The other side: BROWSER_PATH naming nothing runnable means no PNG, the HTML still written, and the one
    warning saying what to install (not an error from deep inside kaleido)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", PNG_SCRIPT, str(tmp_path / "figs")], capture_output=True,
                          text=True, env=_browser_only_through(tmp_path, str(tmp_path / "missing")), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["None", ".html"]
    assert proc.stderr.count("static PNG export needs Chrome or Chromium") == 1
    assert not (tmp_path / "figs" / "png_probe.png").exists()


def test_stale_pngs_lists_figures_whose_png_was_not_refreshed(tmp_path):
    import os
    import time

    from helpers.notebooks import stale_pngs

    since = time.time() - 100
    for name, html_age, png_age in (("fresh", 10, 5), ("old_png", 10, 50), ("no_png", 10, None), ("untouched", 500, 600)):
        (tmp_path / f"{name}.html").write_text("x")
        os.utime(tmp_path / f"{name}.html", (time.time() - html_age,) * 2)
        if png_age is not None:
            (tmp_path / f"{name}.png").write_text("x")
            os.utime(tmp_path / f"{name}.png", (time.time() - png_age,) * 2)
    assert stale_pngs(tmp_path, since) == ["no_png", "old_png"]
