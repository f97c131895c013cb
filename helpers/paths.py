"""Where things live: the repository root, every default folder (once), file hashes, and the one way to
write a file or folder atomically (a temporary sibling renamed into place, so a killed run never leaves a
partial result that looks complete). Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# default folders, relative to the repository root (every function, notebook and CLI flag defaults to these)
RESULTS_DIR = "results"
FIGURES_DIR = "figures"
CACHE_DIR = "results/cache"
DATA_DIR = "data"
FILTERED_DIR = "data/filtered"
MODEL_CACHE_ENV = "METALEARN_MODEL_CACHE"  # where assembled model files go (default ~/.cache/metalearn-clm)


def model_cache() -> Path:
    """The folder where model files assembled from chunk packages are kept (``$METALEARN_MODEL_CACHE``)."""
    return Path(os.environ.get(MODEL_CACHE_ENV, Path.home() / ".cache" / "metalearn-clm")).expanduser()



def repo_root() -> Path:
    """The repository root (the folder holding pyproject.toml), found upwards from this file: the one
    definition that the package, the CLI and the notebooks share (relative output, cache and data folders
    are taken from here, whatever the current directory). Without a checkout (a non-editable install), the
    current directory, or its parent when it is the ``notebooks`` folder papermill runs in."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    cwd = Path.cwd()
    return cwd.parent if cwd.name == "notebooks" else cwd


def repo_path(path: str | Path) -> Path:
    """``path`` if absolute, else relative to the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else repo_root() / p


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def config_hash(config: dict) -> str:
    """Stable 16-hex-digit hash of a JSON-serialisable configuration."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]



def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, memoised on (path, size, modification time)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]


@contextmanager
def atomic_path(path: str | Path, directory: bool = False) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write (a file, or with ``directory`` an empty folder); renamed onto
    ``path`` (replacing it) when the block ends, removed when it raises. The temporary name keeps the suffix
    (``np.savez`` appends ``.npz`` otherwise) and starts with a dot: ``.name.tmpPID.suffix``."""
    final = Path(path)
    tmp = final.with_name(f".{final.stem}.tmp{os.getpid()}{final.suffix}")
    shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    if directory:
        tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise
    if directory and final.exists():
        shutil.rmtree(final)
    tmp.replace(final)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


CSV_DIGITS = 6  # significant digits of every number written to a CSV: a rerun that changes nothing changes no line


def write_csv(df, path: str | Path) -> Path:
    """The one CSV writer for results: a pandas DataFrame without its index, every float at :data:`CSV_DIGITS`
    significant digits, written atomically; returns the path."""
    path = repo_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, df.to_csv(index=False, float_format=f"%.{CSV_DIGITS}g"))
    return path
