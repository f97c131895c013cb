"""One validation step for every run, before any model is loaded or any file is written.

``python -m helpers analyse|merge`` and every notebook (a cell right after the parameters cell) call
:func:`validate_params` on their parameters: types, ranges, shard, dataset names, device / dtype /
device_map, the model's local files, the data file (readable, and not emptied by the filters) and the
output folders (folders, writable). A bad value is one :class:`~helpers.CompendiumError` line naming the
parameter as the caller knows it (``--n-texts`` on the command line, ``n_texts`` in a notebook) and
what to do. Only parameters present are checked, so one call serves every notebook::

    globals().update(validate_params(globals()))   # normalised values: "1bw" -> ["1bw"], "8" -> 8

Called in a notebook kernel, :func:`validate_params` first switches on :func:`notebook_mode`: a
CompendiumError then shows as its one line instead of a traceback, and papermill still reports the cell
as failed. Nothing here imports torch or transformers unless a value needs them (a CUDA device, a
registry model), so parameter errors cost well under a second.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from helpers import CompendiumError
from helpers import param_flag as _flag
from helpers.checks import (
    check_bool,
    check_data_dir,
    check_datasets,
    check_device,
    check_device_map,
    check_dtype,
    check_int,
    check_names,
    check_output_dir,
    check_shard,
    check_share,
)
from helpers.config import get_profile
from helpers.corpus.samples import MIN_WORDS, SAMPLE_SEED, describe_empty, peek_samples
from helpers.lm.files import check_model_files
from helpers.paths import FILTERED_DIR

OUTPUT_DIRS = ("results_dir", "cache_dir", "figures_dir", "filtered_dir")


# key -> (smallest value, None allowed)
_INTS = {
    "n_texts": (1, True),
    "max_tokens": (2, True),
    "min_position": (0, False),
    "batch_size": (1, True),
    "batch_tokens": (1, True),
    "seed": (0, False),
    "filter_seed": (0, False),
    "min_words": (1, False),
    "pca_samples": (1, True),
    "n_samples": (1, True),
    "shards": (1, False),
    "torch_threads": (1, True),
    "threads": (1, True),
}


_BOOLS = ("include_last", "include_trained", "include_untrained", "train_natural_model")


def check_corpus(dataset: str, data_dir=None, filtered_dir=FILTERED_DIR, min_words: int | None = None,
                 seed: int = SAMPLE_SEED) -> int:
    """Read (never write) the filtered texts of ``dataset`` and return how many there are; a one-line error
    naming the file and the rule when the filters leave nothing (``min_words`` given: the caller has that
    parameter, so lowering it is the advice). ``seed`` is the filter's 1BW draw (notebook 01's ``filter_seed``;
    every other run filters with :data:`~helpers.corpus.samples.SAMPLE_SEED`), not a notebook's text-sample
    ``seed``."""

    words = MIN_WORDS if min_words is None else min_words
    texts, report = peek_samples(dataset, filtered_dir, data_dir, min_words=words, seed=seed)
    if not texts:
        raise CompendiumError(describe_empty(report, words, data_dir, min_words_param=min_words is not None))
    return len(texts)


def validate_params(params: Mapping, cli: bool = False) -> dict:
    """Check every known parameter present in ``params`` (a notebook's ``globals()`` or the CLI's arguments)
    before any model loads or any file is written; return the normalised values of those parameters.

    One-line :class:`CompendiumError` on the first bad value. Cheap checks first (types, ranges, names), then
    the model's local files, the output folders, and last the data (the corpus is read and filtered, the
    filtered cache is read but not written): empty after filtering, or too few texts for the shard."""
    notebook_mode()
    p = dict(params)
    out: dict = {}
    if "profile" in p:
        try:
            get_profile(p["profile"])
        except CompendiumError as exc:
            raise CompendiumError(f"{_flag('profile', cli)}: {exc}") from None
        out["profile"] = p["profile"]
    datasets = None
    if "datasets" in p:
        datasets = out["datasets"] = check_datasets(p["datasets"], "datasets", cli)
    if "dataset" in p:
        datasets = check_datasets(p["dataset"], "dataset", cli)
        out["dataset"] = p["dataset"] if isinstance(p["dataset"], str) else datasets
    for key, (minimum, allow_none) in _INTS.items():
        if key in p:
            out[key] = check_int(p[key], key, cli, minimum, allow_none)
    for key in _BOOLS:
        if key in p:
            out[key] = check_bool(p[key], key, cli)
    if "min_position" in out:
        tokens = out.get("max_tokens")
        if tokens is None and "profile" in out and "max_tokens" in p:
            tokens = get_profile(out["profile"]).corpus.max_tokens
        if tokens is not None and out["min_position"] > tokens - 2:
            raise CompendiumError(
                f"{_flag('min_position', cli)} {out['min_position']} leaves no token to analyse with "
                f"{_flag('max_tokens', cli)} {tokens}: need min_position <= max_tokens - 2"
            )
    if out.get("batch_size", 0) is None and out.get("batch_tokens", 0) is None:
        raise CompendiumError(f"give {_flag('batch_size', cli)} or {_flag('batch_tokens', cli)} (or both): "
                              f"both are None, so batches would have no limit")
    if "lens_share" in p:
        out["lens_share"] = check_share(p["lens_share"], "lens_share", cli)
    if "twin" in p:
        out["twin"] = None if p["twin"] is None else check_bool(p["twin"], "twin", cli)
    for key in ("models", "extra_models", "powered_models"):
        if key in p:
            out[key] = check_names(p[key], key, cli)
    if "shard" in p:
        shard = check_shard(p["shard"], "shard", cli)
        out["shard"] = None if shard is None else f"{shard[0]}/{shard[1]}"
    if "dtype" in p:
        out["dtype"] = check_dtype(p["dtype"], "dtype", cli)
    if "device_map" in p:
        out["device_map"] = check_device_map(p["device_map"], "device_map", cli)
    if "device" in p and p.get("device_map") is None:
        out["device"] = check_device(p["device"], "device", cli)
    elif "device" in p:
        out["device"] = p["device"]
    if "data_dir" in p:
        out["data_dir"] = check_data_dir(p["data_dir"], "data_dir", cli)
    for key in OUTPUT_DIRS:
        if key in p:
            out[key] = check_output_dir(p[key], key, cli)
    if "model" in p:
        out["model"] = check_model_files(p["model"], "model", cli)
    if datasets:
        _check_data(datasets, p, out, cli)
    return {k: v for k, v in out.items() if k in params}


def _check_data(datasets: list[str], p: dict, out: dict, cli: bool) -> None:

    corpus = get_profile(out.get("profile", "default")).corpus
    shard = check_shard(out.get("shard"))
    for ds in datasets:
        kept = check_corpus(ds, out.get("data_dir"), out.get("filtered_dir", FILTERED_DIR), out.get("min_words"),
                            out.get("filter_seed", SAMPLE_SEED))  # the sample the run filters, whatever its ``seed``
        if "n_texts" not in p and "shard" not in p and "shards" not in p:
            continue
        n = out.get("n_texts") if "n_texts" in p else None
        n = n if n is not None else corpus.n_texts(ds, out.get("model"))
        sample = kept if n is None else min(n, kept)
        n_flag = _flag("n_texts", cli)
        if shard is not None and shard[0] >= sample:
            raise CompendiumError(
                f"{_flag('shard', cli)} {shard[0]}/{shard[1]} of {ds} is empty: the sample has {sample} texts, so "
                f"only shards i < {sample} hold any; use at most {sample} shards or raise {n_flag}"
            )
        if "shards" in out and out["shards"] > sample:
            raise CompendiumError(
                f"{_flag('shards', cli)} {out['shards']} is more than the {sample} texts of the {ds} sample: "
                f"shards {sample}..{out['shards'] - 1} would be empty; use at most {sample} shards"
            )


def _one_line(shell, etype, value, tb, tb_offset=None) -> list[str]:
    """IPython custom exception display: a CompendiumError is its one line (published as the cell's error,
    so papermill still reports the failure)."""
    stb = [f"{etype.__name__}: {value}"]
    shell._showtraceback(etype, value, stb)
    return stb


def notebook_mode() -> bool:
    """In an IPython kernel, show a :class:`CompendiumError` as its one line instead of a traceback.
    Returns whether a kernel was found (a no-op outside IPython; IPython is never imported here)."""
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        return False
    shell.set_custom_exc((CompendiumError,), _one_line)
    return True

