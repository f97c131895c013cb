"""Torch-free checks of single parameter values (ints, shares, names, datasets, shards, dtype, device, device
map, folders): each returns the normalised value or raises one :class:`~helpers.CompendiumError` line naming
the parameter as the caller knows it (``--n-texts`` on the command line, ``n_texts`` in a notebook).
:mod:`helpers.validate` runs them all at once; a CUDA or MPS device is the only value that imports torch.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from helpers import CompendiumError
from helpers import param_flag as _flag
from helpers.config import DATASETS
from helpers.paths import repo_path

DTYPE_NAMES = ("float32", "bfloat16", "float16", "auto")


DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


DEVICE_PATTERN = re.compile(r"^(cpu|mps|cuda(:\d+)?|xpu(:\d+)?)$")


def check_int(value, key: str, cli: bool = False, minimum: int = 0, allow_none: bool = False) -> int | None:
    """``value`` as an int >= ``minimum`` (an integral float or a string of digits is accepted: papermill
    passes ``-p n_texts 5.0`` or ``-r n_texts 5``); None only if ``allow_none``."""
    if value is None and allow_none:
        return None
    out = None
    if isinstance(value, int) and not isinstance(value, bool):
        out = value
    elif isinstance(value, float) and value.is_integer():
        out = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        out = int(value)
    if out is None or out < minimum:
        want = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise CompendiumError(f"{_flag(key, cli)} must be {want}, got {value!r}")
    return out


def check_bool(value, key: str, cli: bool = False) -> bool:
    """``value`` if it is True or False."""
    if not isinstance(value, bool):
        raise CompendiumError(f"{_flag(key, cli)} must be True or False, got {value!r}")
    return value


def check_share(value, key: str = "lens_share", cli: bool = False) -> float | str | None:
    """A share in [0, 1] (a number, or its text from the command line), "all" (every token), or None (= all)."""
    if value is None or value == "all":
        return value
    try:
        share = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        share = None
    if share is None or not 0.0 <= share <= 1.0:
        raise CompendiumError(f"{_flag(key, cli)} must be a number in [0, 1] or 'all', got {value!r}")
    return share


def check_names(value, key: str, cli: bool = False) -> list[str] | None:
    """A list of model names (registry names, hub ids, local paths, "natural"), or None (the profile's); a single
    string is one name."""
    if value is None:
        return None
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) and n.strip() for n in names):
        raise CompendiumError(f"{_flag(key, cli)} must be a list of model names (e.g. ['smollm2-135m', 'natural']), "
                              f"got {value!r}")
    return list(names)


def check_datasets(value, key: str = "datasets", cli: bool = False) -> list[str]:
    """A list of known corpus names; a single string is one dataset (never iterated by character)."""

    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise CompendiumError(f"{_flag(key, cli)} must be a dataset name or a list of them "
                              f"({', '.join(DATASETS)}), got {value!r}")
    for n in names:
        if n not in DATASETS:
            raise CompendiumError(f"{_flag(key, cli)}: unknown dataset {n!r}: choose from {', '.join(DATASETS)}")
    if len(set(names)) != len(names):
        raise CompendiumError(f"{_flag(key, cli)} names a dataset twice: {value!r}")
    return list(names)


def check_shard(value, key: str = "shard", cli: bool = False) -> tuple[int, int] | None:
    """``"i/n"`` (or ``(i, n)``) -> ``(i, n)`` with 0 <= i < n; None stays None."""
    if value is None:
        return None
    try:
        i, n = (int(x) for x in (value.split("/") if isinstance(value, str) else value))
    except (ValueError, TypeError, AttributeError):
        raise CompendiumError(f"{_flag(key, cli)} must look like 'i/n' (e.g. '0/4'), got {value!r}") from None
    if not 0 <= i < n:
        raise CompendiumError(f"{_flag(key, cli)} {i}/{n} is out of range: need 0 <= i < n (e.g. 0/{max(n, 2)})")
    return i, n


def check_dtype(value, key: str = "dtype", cli: bool = False) -> str:
    """One of float32, bfloat16, float16, auto."""
    if value not in DTYPE_NAMES:
        raise CompendiumError(f"{_flag(key, cli)} {value!r} is not one of {', '.join(DTYPE_NAMES)}")
    return value


def _cuda_check(value: str, key: str, cli: bool) -> None:
    import torch

    if value.startswith("cuda") and not torch.cuda.is_available():
        raise CompendiumError(f"{_flag(key, cli)} {value!r} asked for but no CUDA GPU is visible: use cpu")
    if value == "mps" and not torch.backends.mps.is_available():
        raise CompendiumError(f"{_flag(key, cli)} 'mps' asked for but MPS is not available: use cpu")


def check_device(value, key: str = "device", cli: bool = False) -> str:
    """cpu, cuda, cuda:N, mps or xpu[:N]; a CUDA or MPS device must be visible. 'meta' (no weights) is refused."""
    if not isinstance(value, str) or not DEVICE_PATTERN.match(value):
        extra = " ('meta' holds no weights)" if value == "meta" else ""
        raise CompendiumError(f"{_flag(key, cli)} {value!r} is not a torch device to run on{extra}: "
                              f"use cpu, cuda, cuda:N or mps")
    if value.startswith("cuda") or value == "mps":
        _cuda_check(value, key, cli)
    return value


def check_device_map(value, key: str = "device_map", cli: bool = False) -> str | dict | None:
    """None, an accelerate strategy (auto, balanced, balanced_low_0, sequential), a device, or a dict."""
    if value is None or isinstance(value, dict):
        pass
    elif isinstance(value, str) and value in DEVICE_MAP_STRATEGIES:
        pass
    elif isinstance(value, str) and DEVICE_PATTERN.match(value):
        check_device(value, key, cli)
    else:
        raise CompendiumError(f"{_flag(key, cli)} {value!r} is not a device map: use auto (spread over the "
                              f"visible GPUs), balanced, balanced_low_0, sequential, a device such as cuda:0, or none")
    if value is not None:
        import importlib.util

        if importlib.util.find_spec("accelerate") is None:
            raise CompendiumError(f"{_flag(key, cli)} needs the accelerate package: pip install accelerate")
    return value


def check_output_dir(value, key: str, cli: bool = False) -> str | Path:
    """An output folder that is (or can be created as) a writable folder; nothing is created here."""
    if not isinstance(value, (str, Path)) or not str(value).strip():
        raise CompendiumError(f"{_flag(key, cli)} must be a folder path, got {value!r}")
    path = repo_path(value)
    targets = [path, path / "analysis"] if key == "cache_dir" else [path]
    for target in targets:
        if target.exists() and not target.is_dir():
            raise CompendiumError(f"{_flag(key, cli)}: {target} is a file, not a folder: "
                                  f"choose another {_flag(key, cli)} or move the file away")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CompendiumError(f"{_flag(key, cli)}: cannot create {path}: {existing} is a file; "
                              f"choose another {_flag(key, cli)}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CompendiumError(f"{_flag(key, cli)}: {existing} is not writable: choose a writable folder "
                              f"or fix its permissions")
    return value


def check_data_dir(value, key: str = "data_dir", cli: bool = False) -> str | Path | None:
    """None (the default resolver) or a folder path."""
    if value is None or (isinstance(value, str) and not value):
        return value
    if not isinstance(value, (str, Path)):
        raise CompendiumError(f"{_flag(key, cli)} must be a folder path or None, got {value!r}")
    path = repo_path(value)
    if not path.is_dir():
        raise CompendiumError(f"{_flag(key, cli)} {path} is not a folder: point it at a folder holding "
                              f"wikitext-103/ and 1bw/ (see data/README.md), or leave it unset")
    return value
