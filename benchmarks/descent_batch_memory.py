"""Peak resident memory of notebook 07 part 2's largest batch (the most tokens) on one model, in one process.

    python benchmarks/descent_batch_memory.py qwen2.5-coder-1.5b [BATCH_TOKENS ...]

Loads the model once, samples the default profile's tokens for it, and runs
:func:`helpers.residual.descent_records.batch_records` on the batch with the most tokens for each batch size
(default: the profile's `batch_tokens`, what the notebook uses), with that batch's own subset tokens. Prints the
load's peak, per batch size the resident size before the batch and the peak during it, then the peak of
building the untrained twin (the model's weights freed first, as notebook 07 does); peaks sampled every 0.5 s
(:class:`helpers.notebooks.PeakMemory`), GB = 1e9 bytes.
"""

from __future__ import annotations

import os
import sys
import time

import psutil

from helpers.config import get_profile
from helpers.corpus.samples import filtered_samples, sample_texts
from helpers.experiments.descent_slopes import line_subset, sample_positions, token_seeds
from helpers.lm.load import free_memory, load_model
from helpers.lm.twin import untrained_twin
from helpers.notebooks import PeakMemory
from helpers.residual.descent_records import batch_records
from helpers.runs.batching import make_batches


def main() -> None:
    """Measure each batch size given on the command line (default: the profile's) on the named model."""
    spec = sys.argv[1] if len(sys.argv) > 1 else "smollm2-135m"
    prof = get_profile("default").powered
    sizes = [int(x) for x in sys.argv[2:]] or [prof.batch_tokens]
    size = prof.sample_for(spec)
    with PeakMemory() as peak:
        lm = load_model(spec)
    print(f"{spec}: load peak {peak.gb:.2f} GB", flush=True)
    texts = {ds: sample_texts(filtered_samples(ds)[0], n, 0)
             for ds, n in (("wikitext-103", size.wikitext_texts), ("1bw", size.onebw_texts))}
    sample = sample_positions(lm, texts, prof.max_tokens, prof.per_text, prof.min_context, 0)
    line, seeds = line_subset(sample, size.line_texts, 0), token_seeds(sample)
    me = psutil.Process(os.getpid())
    for tokens in sizes:
        batches = make_batches([len(r) for r in sample.rows], batch_tokens=tokens, shortest_first=True)
        idx = max(batches, key=lambda b: sum(len(sample.rows[i]) for i in b))
        free_memory()
        before, start = me.memory_info().rss / 1e9, time.time()
        with PeakMemory() as peak:
            batch_records(lm, [sample.rows[i] for i in idx], [sample.positions[i] for i in idx],
                          [line[i] for i in idx], prof.alphas, [seeds[i] for i in idx], size.line_stride)
        print(f"{spec}, batch_tokens {tokens}: {len(idx)} rows, {sum(len(sample.rows[i]) for i in idx)} tokens, "
              f"{sum(map(sum, (line[i] for i in idx)))} subset tokens; resident {before:.2f} GB before, peak "
              f"{peak.gb:.2f} GB during the batch ({time.time() - start:.0f} s)", flush=True)
    with PeakMemory() as peak:
        untrained_twin(lm, seed=0, release=True)  # as notebook 07 builds it: the model's weights freed first
    print(f"{spec}: untrained twin peak {peak.gb:.2f} GB", flush=True)


if __name__ == "__main__":
    main()
