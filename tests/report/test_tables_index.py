"""results/README.md as an index a reader can scroll, and the committed CSVs at the stated precision."""

from __future__ import annotations

import re

import pandas as pd
from conftest import REPO  # noqa: E402

from helpers.paths import CSV_DIGITS, write_csv
from helpers.report.tables_index import INLINE_MAX_BYTES, tables_markdown

NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def significant_digits(cell: str) -> int:
    mantissa = cell.lstrip("+-").lower().split("e")[0]
    digits = mantissa.replace(".", "").lstrip("0")
    return len(digits if "." in mantissa else digits.rstrip("0") or digits)


def _table(path, rows: int, caption: str) -> None:
    df = pd.DataFrame({"layer": range(rows), "value": [1 / 3] * rows})
    path.with_suffix(".csv").write_text(df.to_csv(index=False))
    path.write_text(f"{caption}\n\n" + df.to_markdown(index=False) + "\n")


def test_index_shows_small_headline_tables_and_links_every_other(tmp_path):
    notebooks, results = tmp_path / "notebooks", tmp_path / "results"
    notebooks.mkdir()
    results.mkdir()
    (notebooks / "03_norm_statistics.py").write_text("# # 03 · Norm statistics (Table 1)\n")
    (notebooks / "07_descent_test.py").write_text("# # 07 · Descent\n")
    _table(results / "03_table1_m.md", 3, "Table 1: non-decreasing norms. Model M.")
    _table(results / "03_transitions_m.md", 5, "Per-step rates: which steps break. Model M.")
    _table(results / "07_powered_thirds.md", 2000, "Descent per third. Model M.")  # featured but too long
    text = tables_markdown(results, notebooks)
    assert "- [Notebook 03: Norm statistics (Table 1)](#notebook-03) (2 tables)" in text
    assert '<a id="notebook-07"></a>' in text and "Source: [`notebooks/07_descent_test.py`]" in text
    assert (results / "03_table1_m.md").read_text().strip() in text  # small headline table in full
    assert "| `03_transitions_m` | Per-step rates: which steps break | 5 | [CSV](03_transitions_m.csv)" in text
    assert (results / "07_powered_thirds.md").stat().st_size > INLINE_MAX_BYTES
    assert "| `07_powered_thirds` | Descent per third | 2,000 |" in text and "| 1999 |" not in text


def test_the_committed_index_is_short_and_loses_no_table():
    """The real results folder: under 120 KB (it was 368 KB with every table inlined) and every table named."""
    text = tables_markdown(REPO / "results")
    assert len(text.encode()) <= 120_000
    for md in (REPO / "results").glob("*.md"):
        if md.name != "README.md":
            assert f"{md.stem}" in text, md.name


def test_write_csv_rounds_to_the_stated_digits(tmp_path):
    path = write_csv(pd.DataFrame({"x": [104927440.98975582, 1 / 7], "k": [1, 2]}), tmp_path / "t.csv")
    cells = [c for line in path.read_text().splitlines()[1:] for c in line.split(",")]
    assert max(significant_digits(c) for c in cells) == CSV_DIGITS and cells[0] == "1.04927e+08"


def test_no_committed_csv_holds_more_than_8_significant_digits():
    """Every committed table went through the one writer (05_records.csv once held 104927440.98975582)."""
    worst = {}
    for csv in sorted((REPO / "results").glob("*.csv")):
        cells = [c.strip('"') for line in csv.read_text().splitlines()[1:] for c in line.split(",")]
        digits = [significant_digits(c) for c in cells if NUMBER.fullmatch(c)]
        if digits and max(digits) > 8:
            worst[csv.name] = max(digits)
    assert not worst, worst
