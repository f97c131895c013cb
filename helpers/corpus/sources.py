"""Where the test corpora live and whether they are the right files: the one data-folder resolver (explicit
folder > ``$METALEARN_DATA`` > the repository's ``data/`` > the Hugging Face hub), sha256 checksums of every file,
and reading a corpus into lines. Every failure is one :class:`~helpers.CompendiumError` line saying what to do.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from helpers import CompendiumError
from helpers.config import DATASETS
from helpers.paths import DATA_DIR, file_sha256, repo_path

ENV_VAR = "METALEARN_DATA"




LOCAL_FILES = {
    "wikitext-103": "wikitext-103/wiki.test.raw",
    "1bw": "1bw/news.en.heldout-00000-of-00050",
}


# sha256 of every corpus file the code reads (test corpora and natural-text training files);
# the same numbers as data/README.md (a test checks that they agree).
CHECKSUMS = {
    "wikitext-103/wiki.test.raw": "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08",
    "wikitext-103/wiki.valid.tokens": "9aee9f52d6e77de6c7751fc5e7c44287db3ec0eaf15477098acc6b93c1c4250b",
    "1bw/news.en.heldout-00000-of-00050": "265dccd51762253e20425c21ff6ddf09e6da2e11a365da399b0390eebb2d52c8",
    "1bw/news.en.heldout-00010-of-00050": "13d5e6e54f5a1f12549f997029954781df3fb87b84e628f4ea802ca08e852399",
    "1bw/news.en.heldout-00011-of-00050": "1f49c581ba4268e635b9a085fa362a2df22da13cdafdeb8b598f077ada0d56c3",
    "1bw/news.en.heldout-00012-of-00050": "6737d8cbc8aab8c4265a711821c9dbc361d489557b44e0107eeb17ee8519b473",
    "1bw/news.en.heldout-00013-of-00050": "5b1517339e20809895e1d5ead436385c87ae2283ff89193791875edf7ac318b0",
}


# hub copies that datasets 4.x loads (parquet, no loading script); 1BW has none (see module docstring)
HUB_SOURCES = {
    "wikitext-103": ("Salesforce/wikitext", "wikitext-103-raw-v1", "test", "text"),
}


def check_dataset(name: str) -> str:
    """Return ``name`` if it is a known corpus, else raise a one-line error."""
    if name not in DATASETS:
        raise CompendiumError(f"unknown dataset '{name}': choose one of {', '.join(DATASETS)}")
    return name


def resolve_data_dir(explicit: str | Path | None = None) -> tuple[Path, str]:
    """The data folder and what chose it: ``explicit`` ("argument"), else ``$METALEARN_DATA``
    ("METALEARN_DATA"), else the repository's ``data/`` ("repository data/"). A relative path is
    taken from the repository root, like every other path of the project."""
    if explicit is not None and str(explicit) != "":
        return repo_path(explicit), "argument"
    env = os.environ.get(ENV_VAR, "")
    if env:
        return repo_path(env), ENV_VAR
    return repo_path(DATA_DIR), f"repository {DATA_DIR}/"


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data folder (see :func:`resolve_data_dir`)."""
    return resolve_data_dir(explicit)[0]


def verify_file(path: Path, rel: str) -> str:
    """sha256 of ``path`` after checking it against :data:`CHECKSUMS` [``rel``]; one-line error if it differs."""
    got = file_sha256(path)
    want = CHECKSUMS.get(rel)
    if want is not None and got != want:
        raise CompendiumError(
            f"{rel}: sha256 {got[:12]}... of {path} is not the expected {want[:12]}... (data/README.md): "
            f"replace it with the verified copy from the repository (git checkout -- data/{rel})"
        )
    return got


def corpus_file(rel: str, folder: str | Path | None = None) -> Path | None:
    """The verified local file ``rel`` (e.g. ``"1bw/news.en.heldout-00000-of-00050"``).

    Raises a one-line CompendiumError when a folder given explicitly or by ``$METALEARN_DATA``
    lacks it; returns None when the repository's ``data/`` lacks it (the caller may use the hub).
    """
    root, origin = resolve_data_dir(folder)
    path = root / rel
    if not path.is_file():
        if origin.startswith("repository"):
            return None
        raise CompendiumError(
            f"{rel} not found in {root} (from the {origin}): put the file there (see data/README.md) "
            f"or leave the data folder unset to use the repository's data/"
        )
    verify_file(path, rel)
    return path


def _missing_everywhere(name: str, rel: str) -> CompendiumError:
    return CompendiumError(
        f"{name}: {rel} is missing from the repository's data/ folder and has no loadable hub copy: "
        f"restore it (git checkout -- data/) or set {ENV_VAR} to a folder holding it (see data/README.md)"
    )


def _hub_lines(name: str) -> list[str]:
    repo, config, split, column = HUB_SOURCES[name]
    try:
        from datasets import load_dataset

        ds = load_dataset(repo, config, split=split)
    except Exception as exc:  # noqa: BLE001 - any hub failure becomes the same actionable message
        raise CompendiumError(
            f"{name}: {LOCAL_FILES[name]} is not in the repository's data/ and the hub failed "
            f"({type(exc).__name__}): restore data/ (git checkout -- data/) or set {ENV_VAR}"
        ) from None
    return [str(t).rstrip("\n") for t in ds[column]]


def _hub_label(name: str) -> str:
    repo, config, split, _ = HUB_SOURCES[name]
    return f"hub:{repo}/{config}/{split}"


def read_corpus(name: str, folder: str | Path | None = None) -> tuple[list[str], dict]:
    """Raw lines of corpus ``name`` and its source: ``{"file": path relative to the data folder
    (or ``hub:...``), "sha256": hex digest of the file (or of the hub rows joined by newlines)}``."""
    check_dataset(name)
    rel = LOCAL_FILES[name]
    path = corpus_file(rel, folder)
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").split("\n")[:-1]
        except (OSError, UnicodeDecodeError) as exc:
            raise CompendiumError(f"{name}: cannot read {rel} ({exc}); replace it with a verified copy") from None
        return lines, {"file": rel, "sha256": file_sha256(path)}
    if name not in HUB_SOURCES:
        raise _missing_everywhere(name, rel)
    lines = _hub_lines(name)
    digest = hashlib.sha256(("\n".join(lines) + "\n").encode("utf-8")).hexdigest()
    return lines, {"file": _hub_label(name), "sha256": digest}


def read_lines(name: str, folder: str | Path | None = None) -> tuple[list[str], str]:
    """Raw lines of corpus ``name`` and where they came from (relative file name or ``hub:...``)."""
    lines, source = read_corpus(name, folder)
    return lines, source["file"]


def corpus_source(name: str, folder: str | Path | None = None) -> dict:
    """Provenance of corpus ``name`` for captions: ``{"file": ..., "sha256": ...}`` with the file
    relative to the data folder (e.g. ``wikitext-103/wiki.test.raw``) and its full sha256."""
    check_dataset(name)
    path = corpus_file(LOCAL_FILES[name], folder)
    if path is not None:
        return {"file": LOCAL_FILES[name], "sha256": file_sha256(path)}
    return read_corpus(name, folder)[1]
