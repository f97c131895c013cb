"""README's time table, rendered from the tables a whole ``make reproduce`` writes: one cold run (the analysis
cache empty at its start) and the cached rerun beside it, per notebook and model, with the loads of weights.

``python -m helpers notebook`` writes ``results/reproduce_timings_<kind>.csv`` and ``reproduce_loads_<kind>.csv``
(``kind`` ``cold`` or ``cached``, :func:`run_kind`); ``python -m helpers readme`` puts :func:`timings_block` between
README's timings markers (:data:`MARKS`). No number in that table is typed by hand.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

KINDS = ("cold", "cached")
MARKS = ("<!-- timings:start -->", "<!-- timings:end -->")  # README's time table lies between them
LOAD_LOG_PREFIX = "loads_"  # the load logs a run keeps in the analysis cache (not an analysis)


def run_kind(cache_dir: Path) -> str:
    """``cold`` when the analysis cache holds nothing a notebook reads (absent, empty, or only load logs of
    earlier runs), else ``cached`` (a rerun, or a killed run resumed): decided at the start of a run, before it
    writes anything there."""
    if not cache_dir.is_dir():
        return "cold"
    return "cached" if any(not p.name.startswith(LOAD_LOG_PREFIX) for p in cache_dir.iterdir()) else "cold"


def table_name(stem: str, profile: str, kind: str) -> str:
    """``reproduce_timings`` / ``reproduce_loads`` of one profile (no suffix for ``default``) and run kind."""
    return "_".join([stem] + ([] if profile == "default" else [profile]) + [kind])


def timings_caption(profile: str, kind: str, cores: int | None, date: str) -> str:
    """The caption of one run's timings table: command, kind, cores and date."""
    what = ("one cold run (the analysis cache `results/cache` empty at its start)" if kind == "cold"
            else "a cached run (the analysis cache holding an earlier run's results: a rerun, or a killed run resumed)")
    return (f"`python -m helpers notebook --profile {profile}` (make reproduce), {what}, {date}: wall time and peak "
            f"resident memory (this process and the kernels) per notebook, on {cores} CPU cores")


def _minutes(seconds: float) -> str:
    return f"{seconds:,.0f} s" if seconds < 600 else f"{seconds / 60:.1f} min"


def _loads_line(loads: pd.DataFrame) -> str:
    """``SmolLM2 1 load (24 s) + 3 rereads (4 s); ...`` from a loads table (model, loads, load_seconds,
    rereads, reread_seconds)."""
    parts = []
    for r in loads.itertuples():
        name = re.sub(r"^results/cache/training/", "", str(r.model))  # the project-trained model: its run folder
        text = f"{name} {int(r.loads)} load{'s' * (int(r.loads) != 1)} ({r.load_seconds:.0f} s)"
        if int(r.rereads):
            text += f" + {int(r.rereads)} reread{'s' * (int(r.rereads) != 1)} ({r.reread_seconds:.0f} s)"
        parts.append(text)
    return "; ".join(parts) or "none"


def _date(md: Path) -> str:
    found = re.search(r"\d{4}-\d{2}-\d{2}", md.read_text().split("\n", 1)[0]) if md.is_file() else None
    return found.group(0) if found else "date not recorded"


def timings_block(results: str | Path, profile: str = "default") -> str:
    """Markdown: per notebook (and model) the cold run's and the cached run's wall time and peak RSS side by
    side, the totals, each run's date and its loads of weights. A kind not yet measured is said to be missing."""
    results = Path(results)
    frames, notes = {}, []
    for kind in KINDS:
        csv = results / f"{table_name('reproduce_timings', profile, kind)}.csv"
        if not csv.is_file():
            notes.append(f"- {kind}: no measured run yet (`{csv.name}` is missing)")
            continue
        frames[kind] = pd.read_csv(csv, keep_default_na=False)
        loads = results / f"{table_name('reproduce_loads', profile, kind)}.csv"
        said = _loads_line(pd.read_csv(loads)) if loads.is_file() else "not recorded"
        notes.append(f"- {kind} ({_date(csv.with_suffix('.md'))}, [{csv.name}](results/{csv.name})): weights "
                     f"loaded {said}")
    if not frames:
        return "\n".join(notes)
    keys = pd.concat([f[["stage", "model"]] for f in frames.values()]).drop_duplicates()
    keys = pd.concat([keys[keys.stage != "total"], keys[keys.stage == "total"]])
    head = "| notebook | model | " + " | ".join(f"{k} | peak RSS" for k in frames) + " |"
    lines = [head, "|---|---|" + "---:|---:|" * len(frames)]
    for stage, model in keys.itertuples(index=False):
        cells = []
        for frame in frames.values():
            row = frame[(frame.stage == stage) & (frame.model == model)]
            cells += ([_minutes(float(row.seconds.iloc[0])), f"{float(row.peak_rss_gb.iloc[0]):.1f} GB"]
                      if len(row) else ["", ""])
        if stage == "total":
            stage, cells = "**total**", [f"**{c}**" if c else c for c in cells]
        lines.append(f"| {stage} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + notes)

