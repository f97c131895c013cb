"""Records computed batch by batch into a :class:`~helpers.runs.store.RunStore`: one chunk per batch, so a killed
run resumes at its first unfinished batch (notebook 07's descent records, whose model runs take up to 30 min).

A computation that draws random numbers from one generator across batches (part 1's random directions) gives the
same records resumed as in one go: each chunk keeps the generator's state after its batch, and a resumed run
restores it before the next batch. (Part 2 draws from one generator per token, so its records do not depend on
the batching at all.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm  # text bars: they stream through papermill

from helpers.runs.store import RunStore

GEN_STATE = "_generator_state"  # the key of the generator's state in a chunk


def batched_records(root: str | Path | None, config: dict, batches: list[list[int]],
                    compute: Callable[[list[int]], dict[str, np.ndarray]], gen: torch.Generator | None = None,
                    desc: str = "batches", progress: bool = True) -> list[dict[str, np.ndarray]]:
    """``compute(batch)`` for every batch, in order, each kept as chunk ``i`` of the run ``config`` under
    ``root``; finished chunks are read instead (a complete run computes nothing, so ``compute`` may load a
    model lazily). ``gen``, the generator ``compute`` draws from, is saved with each chunk and restored from the
    last one read, so resumed records equal uninterrupted ones. ``root`` None keeps nothing (no disk)."""
    store = RunStore(root, config | {"n_batches": len(batches)}, create=False) if root is not None else None
    complete = store is not None and bool(store.manifest().get("complete"))
    out = []
    for i, batch in enumerate(tqdm(batches, unit="batch", desc=desc, disable=not progress or complete)):
        if store is not None and store.has_chunk(i):
            arrays = store.read_chunk(i)
            state = arrays.pop(GEN_STATE, None)
            if gen is not None and state is not None:
                gen.set_state(torch.from_numpy(state))
        else:
            arrays = compute(batch)
            if store is not None:
                store.dir.mkdir(parents=True, exist_ok=True)
                extra = {GEN_STATE: gen.get_state().numpy()} if gen is not None else {}
                store.save_chunk(i, arrays | extra)
        out.append(arrays)
    if store is not None and not complete:
        store.write_manifest(complete=True)
    return out
