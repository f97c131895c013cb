"""Figure and table writers: subtitles that fit without cutting anything, HTML that a rerun reproduces byte for
byte and that opens offline, CSVs at a stated precision."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from helpers.report.output import (
    CSV_DIGITS,
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
