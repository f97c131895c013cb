"""Load time, analysis throughput (model and its untrained twin) and peak memory of one model, in the default
profile's cross-model settings (64-token texts, lens on final loss <= 1 plus 10%, logit lens).

    python benchmarks/model_speed.py qwen2.5-coder-1.5b [--wikitext 4 --onebw 10]

Prints one line for the load and one per weights (tokens, seconds, tok/s, peak RSS so far).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

from helpers.config import get_profile
from helpers.lm.load import load_model
from helpers.lm.twin import untrained_twin
from helpers.runs.datasets import analyse_dataset


def main() -> None:
    """Measure and print."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--wikitext", type=int, default=4)
    p.add_argument("--onebw", type=int, default=10)
    args = p.parse_args()
    t0 = time.time()
    lm = load_model(args.model)
    print(f"{args.model}: load {time.time() - t0:.0f} s", flush=True)
    with tempfile.TemporaryDirectory() as cache:
        for who in ("model", "twin"):
            t, n = time.time(), 0
            for ds, k in (("wikitext-103", args.wikitext), ("1bw", args.onebw)):
                run = analyse_dataset(lm, ds, profile=get_profile("default"), cache_dir=cache, n_texts=k, max_tokens=64,
                                      progress=False)
                n += run.n_tokens
            dt = time.time() - t
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            print(f"{args.model} {who}: {n} tokens in {dt:.0f} s = {n / dt:.1f} tok/s; peak RSS {rss:.2f} GB", flush=True)
            if who == "model":
                lm = untrained_twin(lm, 0, release=True)


if __name__ == "__main__":
    main()
