"""The wall time and peak memory that `make reproduce` writes to results/reproduce_timings_<cold|cached>.csv: the
sampler sees the memory of child processes (the notebook kernels), not only its own."""

from __future__ import annotations

import subprocess
import sys

from helpers.notebooks import PeakMemory, timed

CHILD = "import time; block = bytearray(400 * 2**20); block[::4096] = b'x' * len(block[::4096]); time.sleep(1.5)"


def test_peak_memory_includes_a_child_process():
    with PeakMemory(interval=0.1) as peak:
        subprocess.run([sys.executable, "-c", CHILD], check=True)
    alone = PeakMemory(interval=0.1)
    with alone:
        pass
    assert peak.gb >= alone.gb + 0.35  # the child's 400 MiB (0.42 GB) of touched pages


def test_timed_returns_the_result_its_time_and_memory():
    out, seconds, gb = timed(sorted, [3, 1, 2])
    assert out == [1, 2, 3] and 0 <= seconds < 60 and gb > 0


def test_a_run_without_a_browser_says_so_once_and_lists_the_pngs_it_left(tmp_path, monkeypatch, capsys):
    """`make reproduce` without Chrome/Chromium: one line at the start (what it skips, how to fix it), the kernels
    told not to warn again, and at the end the figures whose PNG is older than their new HTML; a whole run also
    writes its timings table. The notebooks share one model session, whose folder the completed run removes."""
    import argparse
    import os

    from helpers import commands
    from helpers.report import output

    figures, results = tmp_path / "figures", tmp_path / "results"
    figures.mkdir()
    (figures / "02_old.png").write_text("x")
    os.utime(figures / "02_old.png", (1, 1))

    from helpers.lm.session import SESSION_ENV

    monkeypatch.setenv("METALEARN_MODEL_CACHE", str(tmp_path / "models"))
    monkeypatch.delenv(SESSION_ENV, raising=False)
    sessions = []

    def fake_execute(src, out, params, log_output=False):
        assert os.environ.get(output.PNG_NOTICE_ENV) == "1"
        assert os.environ.get("THP_MEM_ALLOC_ENABLE") == "1"  # the kernels allocate on huge pages
        sessions.append(os.environ[SESSION_ENV])  # the kernels inherit the session
        (tmp_path / "models" / "session-weights").mkdir(parents=True)
        (figures / f"{src.name[:2]}_old.html").write_text("new")

    monkeypatch.setattr(output, "browser_available", lambda: False)
    monkeypatch.setattr(commands, "execute", fake_execute)
    monkeypatch.setattr(commands, "repo_path", lambda p: tmp_path / p)
    monkeypatch.setattr(commands, "RESULTS_DIR", str(results))
    monkeypatch.setattr(commands, "sources", lambda: [tmp_path / "02_inner_loss.py"])
    monkeypatch.delenv(output.PNG_NOTICE_ENV, raising=False)
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    monkeypatch.setattr(commands, "get_profile", lambda name: argparse.Namespace(corpus=argparse.Namespace(models=())))
    commands.cmd_notebook(argparse.Namespace(only=[], model=None, profile="smoke"))
    out = capsys.readouterr().out
    assert out.count("static PNG export needs Chrome or Chromium") == 1
    assert out.startswith("== PNGs:") and "== PNGs not refreshed (1; no browser): 02_old" in out
    import pandas as pd

    timings = pd.read_csv(results / "reproduce_timings_smoke_cold.csv")  # no analysis cache at the start: cold
    assert list(timings.columns) == ["stage", "model", "seconds", "peak_rss_gb"]
    assert list(timings.stage) == ["02_inner_loss", "total"] and timings.model.iloc[0] == "smollm2-135m"
    assert sessions == [str(tmp_path / "models" / "session-weights")] and SESSION_ENV not in os.environ
    assert not (tmp_path / "models" / "session-weights").exists()
    assert "one cold run" in (results / "reproduce_timings_smoke_cold.md").read_text().split("\n")[0]
    (tmp_path / "results" / "cache" / "analysis").mkdir(parents=True)  # an earlier run's records: a cached run
    commands.cmd_notebook(argparse.Namespace(only=[], model=None, profile="smoke"))
    assert (results / "reproduce_timings_smoke_cached.csv").is_file()
    assert (results / "reproduce_loads_smoke_cached.csv").is_file()


def test_kernels_run_without_the_ipywidgets_warning_but_keep_the_others():
    """Every kernel of `make reproduce` printed "TqdmWarning: IProgress not found"; with the environment the
    kernels inherit it is silent, and any other warning still shows."""
    import os

    from helpers.commands import KERNEL_ENV

    code = ("import warnings; from tqdm import TqdmWarning; "
            "warnings.warn('IProgress not found. Please update jupyter and ipywidgets.', TqdmWarning); "
            "warnings.warn('a real problem', UserWarning)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **KERNEL_ENV})
    assert "IProgress" not in proc.stderr and "a real problem" in proc.stderr
