"""Cost of notebook 07 part 2's subset (the start-of-step slope, controls, line search and ablation) against the
all-token records, for one model on one batch, in one run: how many times dearer a subset token is.

Usage: python benchmarks/descent_subset_cost.py [MODEL] [--stride N] [--where]

``--where`` profiles the run with the subset (cProfile) and prints the shares of its time spent in the LM head
(``LoadedModel.logits``), in every linear layer, in backward passes and in the cross-entropy: what bounds the cost.
Measured on the 2-core build machine, stride 1: SmolLM2 0.31 s per token without the subset, 3.46 s per subset token
(11x; 2026-12-04). The first design (controls of every slope and step, reading (b) for both gradients) took 5.2 s
on SmolLM2 and 30.5 s on Qwen2.5-Coder-1.5B per subset token, 1.8 s per token without: hence the Qwen models' stride
2 and the twins' predictor-only readings in the default profile.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from helpers.config import get_profile
from helpers.corpus.samples import load_samples, sample_texts
from helpers.experiments import descent_slopes as dp
from helpers.experiments.zoo import load_or_skip
from helpers.residual.descent_records import batch_records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="smollm2-135m")
    parser.add_argument("--stride", type=int, default=1, help="the subset's layer stride")
    parser.add_argument("--where", action="store_true", help="profile the run with the subset: where time goes")
    args = parser.parse_args()
    prof = get_profile("default").powered
    lm = load_or_skip(args.model, "default", "results/cache", 0, "cpu")
    texts = {ds: sample_texts(load_samples(ds, "data/filtered", None), 4, 0) for ds in ("wikitext-103", "1bw")}
    sample = dp.sample_positions(lm, texts, prof.max_tokens, prof.per_text, prof.min_context, 0)
    seconds = {}
    for label, line in (("without", [[False] * len(p) for p in sample.positions]),
                        ("with", dp.line_subset(sample, 30, 0))):
        profiler = cProfile.Profile() if args.where and label == "with" else None
        start = time.time()
        if profiler:
            profiler.enable()
        batch_records(lm, sample.rows, sample.positions, line, prof.alphas, dp.token_seeds(sample),
                      args.stride)
        seconds[label] = time.time() - start
        if profiler:
            profiler.disable()
            _where(pstats.Stats(profiler), seconds[label])
    n_sub = sum(map(any, dp.line_subset(sample, 30, 0)))
    per_token = seconds["without"] / len(sample)
    per_sub = (seconds["with"] - seconds["without"]) / n_sub
    print(f"{lm.label}: {len(sample)} tokens, {n_sub} in the subset, {lm.n_layers} layers, stride {args.stride}: "
          f"{per_token:.2f} s per token without the subset, {per_sub:.2f} s per subset token "
          f"({per_sub / per_token:.0f}x)")


def _where(stats: pstats.Stats, total: float) -> None:
    """Shares of the profiled run's time in the functions that bound it (cumulative time, one line each)."""
    parts = {"LM head (LoadedModel.logits)": ("load.py", "logits"),
             "every linear layer": ("~", "<built-in method torch._C._nn.linear>"),
             "backward passes": ("~", "<method 'run_backward' of 'torch._C._EngineBase' objects>"),
             "cross-entropy": ("~", "<built-in method torch._C._nn.cross_entropy_loss>")}
    for name, (file, func) in parts.items():
        cum = sum(v[3] for k, v in stats.stats.items() if k[0].endswith(file) and k[2] == func)
        print(f"where: {name} {cum:.1f} s = {100 * cum / total:.0f}% of {total:.1f} s")


if __name__ == "__main__":
    main()
