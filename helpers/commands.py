"""The commands of ``python -m helpers`` (``analyse``, ``merge``, ``readme``, ``notebook``): the heavy part of the
entry point. :mod:`helpers.__main__` parses and validates the arguments first and imports this module only after
they pass, so a bad value is answered before torch or transformers load.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
from papermill.exceptions import PapermillExecutionError

from helpers import CompendiumError
from helpers.config import get_profile
from helpers.corpus.sources import corpus_source
from helpers.experiments import inner_loss, table1
from helpers.lm.load import LOAD_LOG_ENV, load_model
from helpers.lm.registry import DEFAULT_MODEL
from helpers.lm.session import SESSION_ENV, weights_session
from helpers.notebooks import PER_MODEL, PeakMemory, execute, sources, stale_pngs, timed
from helpers.paths import CACHE_DIR, RESULTS_DIR, atomic_write_text, repo_path, repo_root
from helpers.report import figures, figures_norms, output, timings
from helpers.report.findings import brief, render
from helpers.report.tables_index import tables_markdown
from helpers.runs.analysis import NotFinished, merge_records
from helpers.runs.datasets import analyse_dataset
from helpers.runs.launch import barrier_and_close, from_env, init_group
from helpers.stats import tokens

MARK_START, MARK_END = "<!-- results:start -->", "<!-- results:end -->"
KERNEL_ENV = {
    # the kernels' progress bars stream through papermill one line per refresh: one refresh in 20 s is enough
    "TQDM_MININTERVAL": "20",
    # libraries that import tqdm.auto (huggingface_hub) warn in every kernel that ipywidgets is missing: the text
    # bars they fall back to are what papermill streams, so that warning says nothing to act on
    "PYTHONWARNINGS": "ignore:IProgress not found",
    # PyTorch backs its large CPU tensors with transparent huge pages: 7x fewer page faults, half the
    # system time gone, the analysis ~7% faster, numbers unchanged (docs/benchmarks.md, "Huge pages")
    "THP_MEM_ALLOC_ENABLE": "1",
}


def _outputs(lm, run, args) -> list[Path]:
    """Tables (CSV + Markdown), the notebooks' figures (HTML + PNG) and a machine-readable summary.json of one
    dataset run, all under ``--results-dir`` (``--figures-dir`` for the figures; default: the same folder)."""
    tag = f"{lm.name.replace('/', '_')}_{args.dataset}"
    figures_dir = args.figures_dir
    runs = {run.dataset: run}
    table = tokens.table1(run.records, lm.n_layers, args.min_position, lm.label, run.dataset)
    curves = inner_loss.inner_loss_table(runs, lm.label)
    summary = inner_loss.inner_loss_summary(curves)
    trans = table1.transitions_table(runs, lm.n_layers, args.min_position)
    cap = run.caption(f"positions >= {args.min_position + 1}; lens on {run.lens_tokens}")
    paths = (output.save_table(table, f"cli_table1_{tag}", args.results_dir, cap)
             + output.save_table(curves, f"cli_inner_loss_{tag}", args.results_dir, cap)
             + output.save_table(trans, f"cli_transitions_{tag}", args.results_dir, cap))
    paths += output.save_figure(figures.fig_inner_loss(curves, run.dataset, f"Inner loss across layers, {run.dataset}", cap,
                                                       lm.lm_head.weight.shape[0]),
                               f"cli_inner_loss_{tag}", figures_dir, png=args.png)
    paths += output.save_figure(figures_norms.fig_transitions(trans, "Which layer steps break the non-decreasing pattern", cap),
                               f"cli_transitions_{tag}", figures_dir, png=args.png)
    body = {
        "model": {"name": lm.name, "description": lm.describe(), "n_layers": lm.n_layers, "fingerprint": lm.fingerprint},
        "data": {"dataset": run.dataset, "n_texts": run.n_texts, "n_tokens": run.n_tokens,
                 "source": corpus_source(run.dataset, args.data_dir)},
        "protocol": {"profile": args.profile, "min_position": args.min_position, "lens_tokens": run.lens_tokens},
        "table1": table.to_dict("records"),
        "inner_loss": summary.to_dict("records"),
        "inner_loss_by_layer": {f"{f} / {lens}": list(g.sort_values("layer")["mean"])
                                for (f, lens), g in curves.groupby(["filter", "lens"])},
    }
    out = repo_path(args.results_dir) / f"cli_summary_{tag}.json"
    atomic_write_text(out, json.dumps(body, indent=2, default=float) + "\n")
    return paths + [out]


def _load(args):
    return load_model(args.model, device=args.device, dtype=args.dtype, device_map=args.device_map)


def _run(lm, args, shard, cached_only: bool = False):
    """The analysis of ``args`` (checked and normalised by the entry point: ``lens_share`` is already a number,
    "all" or None) for one shard."""
    return analyse_dataset(
        lm, args.dataset, profile=get_profile(args.profile), n_texts=args.n_texts, max_tokens=args.max_tokens,
        min_position=args.min_position, batch_size=args.batch_size, batch_tokens=args.batch_tokens,
        lens_share=args.lens_share, seed=args.seed, cache_dir=args.cache_dir,
        data_dir=args.data_dir, shard=shard, cached_only=cached_only,
    )


def cmd_analyse(args) -> None:
    """Run (or resume) one analysis, or one shard of it, and write its tables, figures and summary.

    Under ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE`` > 1) each rank analyses its own shard on its own
    device, all ranks meet at a barrier and rank 0 merges the shards into the single-process outputs."""

    launch = from_env()
    init_group(launch, args.device)
    lm = _load(args)
    run = _run(lm, args, args.shard)
    print(f"{run.n_tokens} token records in {run.run_dir}")
    barrier_and_close(launch)
    if launch.distributed:
        if launch.rank == 0:
            for p in _outputs(lm, _merged(lm, args, launch.world), args):
                print("wrote", p)
    elif args.shard is None:
        for p in _outputs(lm, run, args):
            print("wrote", p)


def _merged(lm, args, n_shards: int):
    """The finished shards 0..n-1 as one run (computes nothing); one-line error naming missing shards.

    Every shard analyses a disjoint slice of the same sample, so the merged run covers that sample once:
    its text count is the sample's, not the sum over shards."""
    parts, missing = [], []
    for i in range(n_shards):
        try:
            parts.append(_run(lm, args, f"{i}/{n_shards}", cached_only=True))
        except NotFinished:
            missing.append(f"{i}/{n_shards}")
    if missing:
        raise CompendiumError(f"cannot merge: shard(s) {', '.join(missing)} not finished in {args.cache_dir}: run "
                              f"`python -m helpers analyse ... --shard i/{n_shards}` for each, then merge again")
    return replace(parts[0], records=merge_records([p.records for p in parts]))


def cmd_merge(args) -> None:
    """Combine finished shards (cached) into the outputs a single run gives; computes nothing."""
    lm = _load(args)
    for p in _outputs(lm, _merged(lm, args, args.shards), args):
        print("wrote", p)


def cmd_readme(args) -> None:
    """Write the findings (rendered from results/*.csv) with the headline figure into README.md between the results
    markers, the time table of the latest cold and cached runs between its timings markers
    (:func:`helpers.report.timings.timings_block`), and every latest table (results/*.md) into results/README.md."""
    root = repo_root()
    readme = root / "README.md"
    text = readme.read_text()
    if MARK_START not in text:
        raise CompendiumError("README.md has no results markers; add <!-- results:start --> and <!-- results:end -->")
    atomic_write_text(root / "results" / "README.md", tables_markdown(root / "results"))
    full = render(root / "results", root / "figures")
    full = re.sub(r"\]\((figures|results)/", r"](../\1/", full)  # docs/ is one folder down
    atomic_write_text(root / "docs" / "findings.md", "# Findings\n\n" + full.removeprefix("### Findings\n\n"))
    block = brief(root / "results", root / "figures")
    new = output.replace_between(text, MARK_START, MARK_END, block)
    atomic_write_text(readme, output.replace_between(new, *timings.MARKS, timings.timings_block(root / "results")))
    print(f"README.md: findings in brief ({len(block):,} characters); docs/findings.md: every claim; "
          "results/README.md: every table")


def cmd_notebook(args) -> None:
    """Build every (or the named) notebook source and execute it with papermill into notebooks/executed/;
    notebooks 02-04 run once more for each further model of the profile (on that model's own sample). One model
    session (:mod:`helpers.lm.session`) spans the notebooks: each GGUF model is dequantised once and reread. Prints
    each notebook's wall time and peak resident memory (kernel included) and, when it runs them all, writes them
    and the loads of weights to ``results/reproduce_timings_<kind>.csv`` and ``reproduce_loads_<kind>.csv``:
    ``cold`` when the analysis cache was empty at the start, else ``cached`` (README's time table)."""
    extra = [args.model] if args.model else [m.model for m in get_profile(args.profile).corpus.models]
    chosen = [s for s in sources() if not args.only or s.name[:2] in args.only]
    begin, kind = time.time(), timings.run_kind(repo_path(CACHE_DIR))  # before this run writes anything there
    browser = output.browser_available()
    if not browser:
        print(f"== PNGs: {output.PNG_HINT}; the PNGs of the figures this run writes keep their old version "
              "(listed at the end)", flush=True)
        os.environ[output.PNG_NOTICE_ENV] = "1"  # the kernels inherit it: no warning again per notebook
    for key, value in KERNEL_ENV.items():  # the kernels inherit them
        os.environ.setdefault(key, value)
    loads = repo_path(CACHE_DIR) / f"{timings.LOAD_LOG_PREFIX}{os.getpid()}.log"  # every load of weights, by the kernels
    loads.parent.mkdir(parents=True, exist_ok=True)
    loads.unlink(missing_ok=True)
    os.environ[LOAD_LOG_ENV] = str(loads)
    rows = []
    own = os.environ.get(SESSION_ENV)  # a folder the user names is theirs: kept; else the run's, removed at the end
    with weights_session(own, keep=bool(own)), PeakMemory() as whole:
        for src in chosen:
            runs = ([] if args.model else [None]) + (extra if src.name[:2] in PER_MODEL else [])
            for model in runs:
                seconds, gb = _one_notebook(src, model, args.profile)
                rows.append({"stage": src.stem, "model": model or _own_model(src),
                             "seconds": round(seconds, 1), "peak_rss_gb": round(gb, 2)})
    rows.append({"stage": "total", "model": "", "seconds": round(time.time() - begin, 1),
                 "peak_rss_gb": round(whole.gb, 2)})
    counted = load_counts(loads)
    loads.unlink(missing_ok=True)
    if not args.only and not args.model:  # a whole run: its tables are the README's time table
        _save_run_tables(pd.DataFrame(rows), counted, args.profile, kind)
    print("== model weights loaded (model session: rereads of the float copy): "
          + (", ".join(f"{r.model} {r.loads}x ({r.load_seconds:.0f} s) + {r.rereads} rereads ({r.reread_seconds:.0f} s)"
                       for r in counted.itertuples()) or "none"), flush=True)
    print("== wall time per notebook: " + ", ".join(f"{r['stage']} {r['seconds']:.0f} s" for r in rows[:-1])
          + f"; total {rows[-1]['seconds']:.0f} s ({rows[-1]['seconds'] / 60:.1f} min), peak RSS "
          f"{rows[-1]['peak_rss_gb']:.1f} GB", flush=True)
    stale = stale_pngs(repo_path("figures"), begin) if not browser else []
    if stale:
        print(f"== PNGs not refreshed ({len(stale)}; no browser): {', '.join(stale)}", flush=True)


def _save_run_tables(table: pd.DataFrame, loads: pd.DataFrame, profile: str, kind: str) -> None:
    """A whole run's timings and loads of weights, named by profile and run kind (:mod:`helpers.report.timings`)."""
    caption = timings.timings_caption(profile, kind, os.cpu_count(), time.strftime("%Y-%m-%d"))
    output.save_table(table, timings.table_name("reproduce_timings", profile, kind), RESULTS_DIR, caption)
    output.save_table(loads, timings.table_name("reproduce_loads", profile, kind), RESULTS_DIR,
                      f"`python -m helpers notebook --profile {profile}`, {kind} run: how often each model's weights "
                      f"were loaded, by any notebook, and the seconds those loads took (counted by load_model itself; "
                      f"a cached run reads skeletons and loads few)")


def load_counts(log: Path) -> pd.DataFrame:
    """Weights per model from a load log (``helpers.lm.load.LOAD_LOG_ENV``): ``loads`` (from the model's own
    files: for a GGUF model its dequantisation) and ``rereads`` (of the model session's float copy,
    :mod:`helpers.lm.session`), with the seconds each took in all."""
    lines = [ln.split("\t") for ln in log.read_text().splitlines() if ln.strip()] if log.is_file() else []
    root = str(repo_root()) + os.sep  # a model inside the repository (the project-trained one) by its relative path
    frame = pd.DataFrame([(m.removeprefix(root), float(t), kind[0] if kind else "load") for m, t, *kind in lines],
                         columns=["model", "seconds", "kind"])
    frame["reread"] = frame["kind"] == "reread"
    frame["load_seconds"] = frame["seconds"].where(~frame["reread"], 0.0)
    frame["reread_seconds"] = frame["seconds"].where(frame["reread"], 0.0)
    return (frame.groupby("model", sort=False)
            .agg(loads=("reread", lambda r: int((~r).sum())), load_seconds=("load_seconds", "sum"),
                 rereads=("reread", "sum"), reread_seconds=("reread_seconds", "sum"))
            .reset_index())


def _own_model(src: Path) -> str:
    """The model a notebook runs on when no further model is named: the default model for 02-04 (the others
    name theirs in their tables)."""
    return DEFAULT_MODEL if src.name[:2] in PER_MODEL else ""


def _one_notebook(src: Path, model: str | None, profile: str) -> tuple[float, float]:
    """Execute one notebook source (one model); its wall time and peak memory. A CompendiumError inside it is
    its one line; any other error propagates."""
    name = ".".join([src.stem] + ([model] if model else []) + ([profile] if profile != "default" else []))
    out = repo_root() / "notebooks" / "executed" / f"{name}.ipynb"
    params = {"profile": profile} | ({"model": model} if model else {})
    print(f"== {name} (profile {profile})", flush=True)
    start = time.time()
    try:
        _, seconds, gb = timed(execute, src, out, params, log_output=True)
    except PapermillExecutionError as exc:
        if exc.ename != "CompendiumError":
            raise
        raise CompendiumError(f"{name}: {exc.evalue} (executed copy: {out})") from None
    wrote = [f for d in ("results", "figures") for f in sorted((repo_root() / d).glob(f"{src.name[:2]}_*"))
             if f.stat().st_mtime >= start]
    print(f"== {name}: {seconds:.0f} s, peak RSS {gb:.1f} GB; wrote {sum(f.suffix == '.csv' for f in wrote)} "
          f"tables and {sum(f.suffix == '.html' for f in wrote)} figures (results/, figures/) and "
          f"{out.relative_to(repo_root())}", flush=True)
    return seconds, gb
