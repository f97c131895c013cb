"""Token-budget batches: indices grouped by length so a batch carries little padding (the one batcher)."""

from __future__ import annotations

from helpers import CompendiumError


def make_batches(lengths: list[int], batch_size: int | None = None, batch_tokens: int | None = None,
                 shortest_first: bool = False) -> list[list[int]]:
    """Indices grouped into batches, longest first (less padding; ``shortest_first``: the other way round, the
    order notebook 07's cached records were made in), deterministic (ties by index).

    A batch holds at most ``batch_size`` rows (None: no limit) and at most ``batch_tokens`` padded tokens
    (rows x its longest row; None: no limit); a row longer than ``batch_tokens`` gets a batch of its own.
    """
    for name, value in (("batch_size", batch_size), ("batch_tokens", batch_tokens)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise CompendiumError(f"{name} must be a positive integer, got {value!r}")
    if batch_size is None and batch_tokens is None:
        raise CompendiumError("give batch_size or batch_tokens (or both)")
    sign = 1 if shortest_first else -1
    order = sorted(range(len(lengths)), key=lambda i: (sign * lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches:
            cur = batches[-1]
            rows_ok = batch_size is None or len(cur) < batch_size
            longest = max(lengths[cur[0]], lengths[i])  # the first row's, or the new row's going shortest first
            tokens_ok = batch_tokens is None or (len(cur) + 1) * longest <= batch_tokens
            if rows_ok and tokens_ok:
                cur.append(i)
                continue
        batches.append([i])
    return batches


def padding_share(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of padded positions over all positions the batches compute."""
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1.0 - sum(lengths[i] for b in batches for i in b) / max(1, padded)
