"""Corpora: the one data-folder resolver, checksums, the paper's filtering and seeded sampling.

Where a corpus file comes from, in order (:func:`resolve_data_dir`):

1. an explicit folder (the ``data_dir`` / ``folder`` argument of any function here),
2. the ``METALEARN_DATA`` environment variable,
3. the repository's own ``data/`` folder (the verified files ship with the repository, see
   ``data/README.md``),
4. the Hugging Face hub, for WikiText-103 only (``Salesforce/wikitext``, parquet); the One Billion
   Word test shard has no hub copy that current ``datasets`` can load, so it must be local.

A folder given explicitly (1 or 2) must hold the file; only the repository's ``data/`` falls back to
the hub. Every local file is checked against its sha256 in :data:`CHECKSUMS` (the numbers in
``data/README.md``) before it is used. Provenance names files relative to the data folder, never by
an absolute path.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from helpers import CompendiumError
from helpers.store import file_sha256, repo_path

DATASETS = ("wikitext-103", "1bw")
ENV_VAR = "METALEARN_DATA"
REPO_DATA = "data"
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
MIN_WORDS = 10
N_1BW_SAMPLES = 5000
SAMPLE_SEED = 0
FILTERED_DIR = "data/filtered"



@dataclass
class FilterReport:
    """Counts before and after each filtering rule of one corpus, and where the corpus came from
    (``source``: file relative to the data folder, or ``hub:...``; ``sha256``: first 12 hex digits)."""

    dataset: str
    source: str
    sha256: str
    lines: int
    blank: int
    headings: int
    short: int
    kept: int
    sampled: int

    def as_dict(self) -> dict:
        """Plain dict (for tables)."""
        return asdict(self)


def check_dataset(name: str) -> str:
    """Return ``name`` if it is a known corpus, else raise a one-line error."""
    if name not in DATASETS:
        raise CompendiumError(f"unknown dataset '{name}': choose one of {', '.join(DATASETS)}")
    return name


# ------------------------------------------------------------------------------------------------
# the resolver


def resolve_data_dir(explicit: str | Path | None = None) -> tuple[Path, str]:
    """The data folder and what chose it: ``explicit`` ("argument"), else ``$METALEARN_DATA``
    ("METALEARN_DATA"), else the repository's ``data/`` ("repository data/"). A relative path is
    taken from the repository root, like every other path of the project."""
    if explicit is not None and str(explicit) != "":
        return repo_path(explicit), "argument"
    env = os.environ.get(ENV_VAR, "")
    if env:
        return repo_path(env), ENV_VAR
    return repo_path(REPO_DATA), f"repository {REPO_DATA}/"


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


# ------------------------------------------------------------------------------------------------
# test corpora


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


def source_caption(name: str, folder: str | Path | None = None) -> str:
    """One short line for captions: ``wikitext-103/wiki.test.raw (sha256 173c87a53759)``."""
    src = corpus_source(name, folder)
    return f"{src['file']} (sha256 {src['sha256'][:12]})"


# ------------------------------------------------------------------------------------------------
# filtering and sampling


def is_heading(line: str) -> bool:
    """WikiText heading lines look like `` = Title = `` or `` = = Section = = ``."""
    s = line.strip()
    return len(s) >= 2 and s.startswith("=") and s.endswith("=")


def filter_lines(name: str, lines: list[str], min_words: int = MIN_WORDS) -> tuple[list[str], dict]:
    """Apply the paper's rules: drop blank lines, WikiText headings and texts of < ``min_words`` words."""
    check_dataset(name)
    if not isinstance(min_words, int) or min_words < 1:
        raise CompendiumError(f"min_words must be a positive integer, got {min_words!r}")
    counts = {"lines": len(lines), "blank": 0, "headings": 0, "short": 0}
    kept = []
    for line in lines:
        text = line.strip()
        if not text:
            counts["blank"] += 1
        elif name == "wikitext-103" and is_heading(text):
            counts["headings"] += 1
        elif len(text.split()) < min_words:
            counts["short"] += 1
        else:
            kept.append(text)
    counts["kept"] = len(kept)
    return kept, counts


def sample_texts(texts: list[str], n: int | None, seed: int = SAMPLE_SEED) -> list[str]:
    """``n`` texts drawn without replacement with a fixed seed, in corpus order (all if n is None)."""
    if n is None or n >= len(texts):
        return list(texts)
    if not isinstance(n, int) or n < 1:
        raise CompendiumError(f"n_texts (--n-texts) must be a positive integer or None, got {n!r}")
    idx = sorted(random.Random(seed).sample(range(len(texts)), n))
    return [texts[i] for i in idx]


def filter_rules(name: str, min_words: int = MIN_WORDS, seed: int = SAMPLE_SEED) -> dict:
    """The filtering and sampling rules applied to ``name`` (part of the filtered cache's key)."""
    return {
        "min_words": min_words,
        "skip_blank": True,
        "skip_headings": name == "wikitext-103",
        "n_samples": N_1BW_SAMPLES if name == "1bw" else None,
        "seed": seed,
    }


def load_filtered(
    name: str, folder: str | Path | None = None, min_words: int = MIN_WORDS, seed: int = SAMPLE_SEED
) -> tuple[list[str], FilterReport]:
    """The paper's evaluation texts: WikiText-103 test (all that pass) or 5,000 random 1BW test sentences."""
    lines, source = read_corpus(name, folder)
    kept, counts = filter_lines(name, lines, min_words)
    texts = sample_texts(kept, filter_rules(name, min_words, seed)["n_samples"], seed)
    report = FilterReport(dataset=name, source=source["file"], sha256=source["sha256"][:12],
                          sampled=len(texts), **counts)
    return texts, report


def fingerprint_texts(texts: list[str]) -> str:
    """Short sha256 of a list of texts (order matters): the data part of a cache key."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------
# the filtered-sample cache (data/filtered/<dataset>.jsonl)


def filtered_path(name: str, out_dir: str | Path = FILTERED_DIR) -> Path:
    """Where the filtered samples of ``name`` are cached (``out_dir`` relative to the repository root)."""
    return repo_path(out_dir) / f"{check_dataset(name)}.jsonl"


def filtered_key(name: str, source: dict, min_words: int = MIN_WORDS, seed: int = SAMPLE_SEED) -> dict:
    """What the filtered samples depend on: the corpus file (relative name and sha256) and the rules."""
    return {"format": 1, "dataset": name, "file": source["file"], "sha256": source["sha256"],
            "rules": filter_rules(name, min_words, seed)}


def save_filtered(name: str, texts: list[str], out_dir: str | Path = FILTERED_DIR, key: dict | None = None,
                  report: FilterReport | None = None) -> Path:
    """Write filtered texts as JSON lines after a header line holding the cache key and the filter
    report; atomically (temporary file + rename), so a killed run never leaves a partial file."""
    path = filtered_path(name, out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"key": key, "report": report.as_dict() if report is not None else None}
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps(header) + "\n")
        for i, t in enumerate(texts):
            fh.write(json.dumps({"id": i, "text": t}) + "\n")
    tmp.replace(path)
    return path


def _read_cache(path: Path, key: dict) -> tuple[list[str], FilterReport] | None:
    """The cached texts and report if ``path`` holds samples made under ``key``, else None."""
    if not path.is_file():
        return None
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        if not rows or rows[0].get("key") != key or not isinstance(rows[0].get("report"), dict):
            return None
        return [r["text"] for r in rows[1:]], FilterReport(**rows[0]["report"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None  # unreadable or foreign file: recompute


def _samples(name: str, filtered_dir, folder, min_words: int, seed: int) -> tuple[list[str], FilterReport, dict, bool]:
    source = corpus_source(name, folder)
    key = filtered_key(name, source, min_words, seed)
    cached = _read_cache(filtered_path(name, filtered_dir), key)
    if cached is not None:
        return *cached, key, True
    return *load_filtered(name, folder, min_words, seed), key, False


def peek_samples(
    name: str, filtered_dir: str | Path = FILTERED_DIR, folder: str | Path | None = None,
    min_words: int = MIN_WORDS, seed: int = SAMPLE_SEED,
) -> tuple[list[str], FilterReport]:
    """What :func:`filtered_samples` returns, without writing the cache (for validation before a run)."""
    texts, report, _, _ = _samples(name, filtered_dir, folder, min_words, seed)
    return texts, report


def filtered_samples(
    name: str, filtered_dir: str | Path = FILTERED_DIR, folder: str | Path | None = None,
    min_words: int = MIN_WORDS, seed: int = SAMPLE_SEED,
) -> tuple[list[str], FilterReport]:
    """Filtered texts and report of ``name``, cached under ``filtered_dir`` keyed by the corpus file's
    relative name, its sha256 and the rules: recomputed (and rewritten) whenever the key differs."""
    texts, report, key, cached = _samples(name, filtered_dir, folder, min_words, seed)
    if not cached:
        save_filtered(name, texts, filtered_dir, key, report)
    return texts, report


def describe_empty(report: FilterReport, min_words: int = MIN_WORDS, folder: str | Path | None = None,
                   min_words_param: bool = False) -> str:
    """One line saying which file the filters emptied and by which rule, and what to do (lower ``min_words``
    where the caller has that parameter, notebook 01; else restore the file)."""
    where = report.source if report.source.startswith("hub:") else str(data_dir(folder) / report.source)
    if report.lines == 0 or report.lines == report.blank:
        return (f"no texts to analyse in {report.dataset}: {where} holds no text ({report.lines} lines, all blank): "
                f"restore the file (git checkout -- data/, see data/README.md)")
    rules = [f"{n} {what}" for n, what in ((report.blank, "blank"), (report.headings, "headings"),
                                           (report.short, f"shorter than min_words={min_words} words")) if n]
    fix = "lower min_words" if report.short and min_words_param else "restore the file (git checkout -- data/)"
    return (f"no texts to analyse in {report.dataset}: the filters removed all {report.lines} lines of {where} "
            f"({', '.join(rules)}): {fix}")


def load_samples(
    name: str, filtered_dir: str | Path = FILTERED_DIR, folder: str | Path | None = None,
    min_words: int = MIN_WORDS, seed: int = SAMPLE_SEED,
) -> list[str]:
    """The filtered texts of ``name`` (see :func:`filtered_samples`)."""
    return filtered_samples(name, filtered_dir, folder, min_words, seed)[0]
