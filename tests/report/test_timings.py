"""README's time table (helpers.report.timings): the cold and the cached run side by side, read from the tables a
whole run writes, the run kind decided by the analysis cache at the start."""

from __future__ import annotations

import pandas as pd

from helpers.report.output import replace_between
from helpers.report.timings import MARKS, run_kind, table_name, timings_block, timings_caption


def _run(results, kind, seconds, gb, loads):
    rows = [{"stage": "00_meta_learning_view", "model": "", "seconds": seconds[0], "peak_rss_gb": gb[0]},
            {"stage": "02_inner_loss", "model": "smollm2-135m", "seconds": seconds[1], "peak_rss_gb": gb[1]},
            {"stage": "total", "model": "", "seconds": sum(seconds) + 1, "peak_rss_gb": max(gb)}]
    pd.DataFrame(rows).to_csv(results / f"{table_name('reproduce_timings', 'default', kind)}.csv", index=False)
    (results / f"{table_name('reproduce_timings', 'default', kind)}.md").write_text(
        timings_caption("default", kind, 2, "2026-12-04") + "\n\n| table |\n")
    pd.DataFrame(loads, columns=["model", "loads", "load_seconds", "rereads", "reread_seconds"]).to_csv(
        results / f"{table_name('reproduce_loads', 'default', kind)}.csv", index=False)


def test_run_kind_is_cold_only_when_the_analysis_cache_holds_nothing(tmp_path):
    cache = tmp_path / "cache"
    assert run_kind(cache) == "cold"  # absent
    cache.mkdir()
    (cache / "loads_123.log").write_text("")  # a killed run's load log is not a cached analysis
    assert run_kind(cache) == "cold"
    (cache / "analysis").mkdir()
    assert run_kind(cache) == "cached"


def test_table_names_carry_profile_and_kind():
    assert table_name("reproduce_timings", "default", "cold") == "reproduce_timings_cold"
    assert table_name("reproduce_loads", "paper", "cached") == "reproduce_loads_paper_cached"


def test_block_puts_the_cold_and_cached_runs_side_by_side_totals_last(tmp_path):
    _run(tmp_path, "cold", [12, 900], [2.0, 3.2], [("smollm2-135m", 1, 24.4, 3, 4.2)])
    _run(tmp_path, "cached", [8, 10], [1.9, 2.1], [("results/cache/training/natural/x/final", 4, 0.1, 0, 0.0)])
    block = timings_block(tmp_path)
    lines = block.splitlines()
    assert lines[0] == "| notebook | model | cold | peak RSS | cached | peak RSS |"
    assert lines[2] == "| 00_meta_learning_view |  | 12 s | 2.0 GB | 8 s | 1.9 GB |"
    assert lines[3] == "| 02_inner_loss | smollm2-135m | 15.0 min | 3.2 GB | 10 s | 2.1 GB |"
    assert lines[4] == "| **total** |  | **15.2 min** | **3.2 GB** | **19 s** | **2.1 GB** |"  # 913 s; 19 s
    assert "smollm2-135m 1 load (24 s) + 3 rereads (4 s)" in block and "natural/x/final 4 loads (0 s)" in block
    assert "cold (2026-12-04" in block


def test_block_says_which_run_is_missing(tmp_path):
    _run(tmp_path, "cold", [12, 700], [2.0, 3.2], [])
    block = timings_block(tmp_path)
    assert "| cold | peak RSS |" in block and "| cached |" not in block
    assert "cached: no measured run yet" in block and "weights loaded none" in block
    assert timings_block(tmp_path / "empty").count("no measured run yet") == 2


def test_replace_block_only_between_the_markers():
    readme = "intro\n<!-- timings:start -->\nold\n<!-- timings:end -->\nrest\n"
    assert replace_between(readme, *MARKS, "new") == "intro\n<!-- timings:start -->\nnew\n<!-- timings:end -->\nrest\n"
    assert replace_between("no markers\n", *MARKS, "new") == "no markers\n"
