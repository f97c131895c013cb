"""The step geometry (:func:`helpers.residual.geometry.step_geometry`) over a sample of texts: token-budget
batches, one cached chunk per batch (a killed run resumes), records sorted by (text, position) with ``text_id``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tqdm import tqdm  # text bars: they stream through papermill and need no ipywidgets

from helpers import CompendiumError
from helpers.corpus.samples import fingerprint_texts
from helpers.lm.load import LoadedModel
from helpers.paths import CACHE_DIR
from helpers.residual.geometry import step_geometry
from helpers.runs.batching import make_batches
from helpers.runs.store import RunStore

GEOMETRY_VERSION = 2  # bump when step_geometry's numbers change: cached runs are then recomputed


def run_geometry(lm: LoadedModel, texts: list[str], dataset: str, max_tokens: int, min_position: int = 4,
                 batch_tokens: int = 2048, seed: int = 0, cache_dir: str = CACHE_DIR,
                 progress: bool = True, load: Callable[[], LoadedModel] | None = None) -> dict[str, np.ndarray]:
    """Per-token step geometry of ``lm`` on ``texts`` (each cut at ``max_tokens``; texts without a token at
    ``min_position`` skipped), cached under ``cache_dir/geometry``; the swap partners are drawn per batch with
    ``seed``. ``lm`` may be a skeleton: ``load`` then gives the model with its weights at the first batch that is
    not cached. Raises one :class:`CompendiumError` line when no text is long enough."""
    rows = lm.encode(texts, max_tokens)
    ids = [i for i, r in enumerate(rows) if len(r) > min_position]
    if not ids:
        raise CompendiumError(f"no text of {dataset} has a token at position {min_position} after tokenisation "
                              f"(max_tokens={max_tokens}): lower min_position or use longer texts")
    batches = make_batches([len(rows[i]) for i in ids], batch_tokens=batch_tokens)
    key = {"model": lm.name, "model_fingerprint": lm.fingerprint, "dtype": str(lm.dtype), "dataset": dataset,
           "data_fingerprint": fingerprint_texts(texts), "n_texts": len(texts), "max_tokens": max_tokens,
           "min_position": min_position, "batch_tokens": batch_tokens, "seed": seed, "version": GEOMETRY_VERSION}
    store = RunStore(f"{cache_dir}/geometry", key)
    bar = tqdm(total=sum(len(rows[i]) for i in ids), unit="tok", desc=f"geometry {dataset} {lm.label}",
               disable=not progress)
    for b, batch in enumerate(batches):
        text_ids = [ids[j] for j in batch]
        if not store.has_chunk(b):
            lm = load() if lm.skeleton else lm
            rec = step_geometry(lm, [rows[t] for t in text_ids], min_position, seed=seed + b)
            rec["text_id"] = np.asarray(text_ids, dtype=np.int32)[rec.pop("sample")]
            store.save_chunk(b, rec)
        bar.update(sum(len(rows[t]) for t in text_ids))
    bar.close()
    records = store.load_chunks(len(batches))
    order = np.lexsort((records["position"], records["text_id"]))
    store.write_manifest(complete=True, n_chunks=len(batches), model=lm.describe())
    return {k: v[order] for k, v in records.items()}
