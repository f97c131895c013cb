"""Wall time and peak resident memory of notebook 07 part 2 for one model, cold (a fresh cache folder).

    python benchmarks/timed_command.py python benchmarks/descent_model_memory.py qwen2.5-coder-1.5b /tmp/cache07

Runs :func:`helpers.experiments.descent_slopes.run_models` on the default profile's sample of that model and its
untrained twin, with ``CACHE`` (default: a new temporary folder) as the cache: what the notebook does for that
model on a cold cache, without the other models. Prints the records' size and the seconds.
"""

from __future__ import annotations

import sys
import tempfile
import time

from helpers.config import get_profile
from helpers.corpus.samples import load_samples
from helpers.experiments.descent_slopes import run_models


def main() -> None:
    """One model's part 2 on a cold cache."""
    spec = sys.argv[1] if len(sys.argv) > 1 else "smollm2-135m"
    cache = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="descent07_")
    texts = {ds: load_samples(ds) for ds in ("wikitext-103", "1bw")}  # as notebook 07 reads them
    start = time.time()
    default = get_profile("default")
    run = run_models([spec], texts, default.powered, default, cache_dir=cache)
    print(f"{spec}: {len(run.records):,} records (model and twin) in {time.time() - start:.0f} s; cache {cache}")


if __name__ == "__main__":
    main()
