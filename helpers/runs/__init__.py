"""Runs: the cached, resumable, shardable analysis of a corpus, and its launchers.

- :mod:`helpers.runs.store`     run folders keyed by a configuration hash, chunks, manifests
- :mod:`helpers.runs.batching`  token-budget batches
- :mod:`helpers.runs.analysis`  one model over a list of texts, chunk by chunk (resumable, shardable, mergeable)
- :mod:`helpers.runs.datasets`  a profile's sample of a corpus through it: :class:`~helpers.runs.datasets.DatasetRun`
- :mod:`helpers.runs.launch`    torchrun / accelerate launch: rank shards, barrier, rank 0 merges
"""
