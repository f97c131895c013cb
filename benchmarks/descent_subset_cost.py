"""Cost of notebook 07 part 2's subset (the start-of-step slope, controls, line search and ablation) against the
all-token records, for one model on one batch, in one run: how many times dearer a subset token is.

Usage: python benchmarks/descent_subset_cost.py [MODEL] [--stride N] [--where] [--twin]
       python benchmarks/descent_subset_cost.py --random qwen2-1.5b --device cuda [--stride N] [--texts K]

``--random SHAPE`` runs a randomly initialised model of a released model's shape (``benchmarks/throughput.py``'s
shapes) in float32 on ``--device`` over ``--texts`` random texts of 256 tokens (four current tokens each at
positions >= 128, one per text in the subset): the cost of notebook 07 at that shape on a GPU, where the real
weights are not at hand.

``--where`` profiles the run with the subset (cProfile) and prints the shares of its time spent in the LM head
(``LoadedModel.logits``), in every linear layer, in backward passes and in the cross-entropy: what bounds the cost.
``--twin`` then measures the untrained twin the same way (its subset: the ``true`` slope and the predictor's readings)
and how much of its subset time the predictor's readings without a gradient take (line search (a) and ablation (a):
for the twin they are drawn in the figures as the null and read by no rule).
Measured on the 2-core build machine, stride 1: SmolLM2 0.31 s per token without the subset, 3.46 s per subset token
(11x; 2026-12-04). The first design (controls of every slope and step, reading (b) for both gradients) took 5.2 s
on SmolLM2 and 30.5 s on Qwen2.5-Coder-1.5B per subset token, 1.8 s per token without: hence the Qwen models' stride
2 and the twins' predictor-only readings in the default profile.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from helpers.config import get_profile
from helpers.corpus.samples import load_samples, sample_texts
from helpers.experiments import descent_slopes as dp
from helpers.experiments.zoo import load_or_skip
from helpers.lm.twin import untrained_twin
from helpers.residual import descent_records
from helpers.residual.descent_records import batch_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import RANDOM_SHAPES  # noqa: E402
from throughput import load as load_shape  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="smollm2-135m")
    parser.add_argument("--stride", type=int, default=1, help="the subset's layer stride")
    parser.add_argument("--where", action="store_true", help="profile the run with the subset: where time goes")
    parser.add_argument("--twin", action="store_true", help="also the untrained twin and its figure-only readings")
    parser.add_argument("--random", choices=sorted(RANDOM_SHAPES), help="a random model of a real shape, in float32")
    parser.add_argument("--device", default="cpu", help="where the model runs (cpu, cuda)")
    parser.add_argument("--texts", type=int, default=8, help="random texts (with --random)")
    args = parser.parse_args()
    prof = get_profile("default").powered
    if args.random:
        lm = load_shape(SimpleNamespace(random=args.random, dtype="float32", device=args.device, model=None))
        sample = random_sample(int(lm.model.config.vocab_size), args.texts, prof.per_text)
        _cost(lm, random_sample(int(lm.model.config.vocab_size), 1, 1), [[True]], prof.alphas, 1, True, False)  # warm-up
    else:
        lm = load_or_skip(args.model, "default", "results/cache", 0, args.device)
        texts = {ds: sample_texts(load_samples(ds, "data/filtered", None), 4, 0) for ds in ("wikitext-103", "1bw")}
        sample = dp.sample_positions(lm, texts, prof.max_tokens, prof.per_text, prof.min_context, 0)
    line = dp.line_subset(sample, 30, 0)
    n_sub = sum(map(any, line))
    per_token, per_sub = _cost(lm, sample, line, prof.alphas, args.stride, True, args.where)
    print(f"{lm.label}: {len(sample)} tokens, {n_sub} in the subset, {lm.n_layers} layers, stride {args.stride}: "
          f"{per_token:.2f} s per token without the subset, {per_sub:.2f} s per subset token "
          f"({per_sub / per_token:.0f}x)")
    if torch.cuda.is_available():
        print(f"{torch.cuda.get_device_name()}: peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB allocated")
    if args.twin:
        twin = untrained_twin(lm, seed=0, release=True)
        spent = [0.0]
        plain = descent_records._Batch.predictor

        def predictor(self, *a, grad=False, **k):  # the readings without a gradient: line search (a), ablation (a)
            start = time.time()
            out = plain(self, *a, grad=grad, **k)
            spent[0] += 0.0 if grad else time.time() - start
            return out

        descent_records._Batch.predictor = predictor
        per_token, per_sub = _cost(twin, sample, line, prof.alphas, args.stride, False, False)
        print(f"untrained twin: {per_token:.2f} s per token without the subset, {per_sub:.2f} s per subset token "
              f"({per_sub / per_token:.0f}x); the predictor's readings without a gradient (figure-only) "
              f"{spent[0] / n_sub:.2f} s per subset token = {100 * spent[0] / (per_sub * n_sub):.0f}% of its subset time")


def random_sample(vocab: int, n_texts: int, per_text: int, tokens: int = 256) -> dp.PositionSample:
    """``n_texts`` texts of ``tokens`` random ids, ``per_text`` seeded current tokens each at positions >= tokens / 2."""
    rng = random.Random(0)
    rows = [[rng.randrange(vocab) for _ in range(tokens)] for _ in range(n_texts)]
    positions = [sorted(rng.sample(range(tokens // 2, tokens - 1), per_text)) for _ in range(n_texts)]
    return dp.PositionSample(["wikitext-103"] * n_texts, list(range(n_texts)), rows, positions, tokens // 2)


def _cost(lm, sample, subset, alphas, stride: int, full: bool, where: bool) -> tuple[float, float]:
    """Seconds per token of one batch without the subset, and per subset token (the difference), in one run."""
    seconds = {}
    for label, line in (("without", [[False] * len(p) for p in sample.positions]), ("with", subset)):
        profiler = cProfile.Profile() if where and label == "with" else None
        start = time.time()
        if profiler:
            profiler.enable()
        batch_records(lm, sample.rows, sample.positions, line, alphas, dp.token_seeds(sample), stride, full)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds[label] = time.time() - start
        if profiler:
            profiler.disable()
            _where(pstats.Stats(profiler), seconds[label])
    return seconds["without"] / len(sample), (seconds["with"] - seconds["without"]) / sum(map(any, subset))


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
