"""Where the analysis spends its time: shares of one run of ``analyse_batch`` over a profile's settings.

Times, in one run on the same batches: the forward pass with residual capture, the model's own loss (LM head on
every token), the last block re-run on the stacked layers (the lens), the LM head and cross-entropy of the lenses
on the selected tokens, and the rest. Prints one line per phase (seconds and share) and ``ratio NAME = X`` lines
last. Example (the paper profile's lens settings on WikiText-103):

    python benchmarks/where_time_goes.py --profile paper --texts 24
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch


def main() -> None:
    """Run the timed analysis and print the shares."""
    from helpers.config import get_profile
    from helpers.corpus.samples import filtered_samples, sample_texts
    from helpers.lm.load import load_model
    from helpers.residual import lens
    from helpers.residual import records as analysis
    from helpers.runs.batching import make_batches

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--profile", default="paper", help="whose lens_share / logit_lens to use")
    p.add_argument("--dataset", default="wikitext-103")
    p.add_argument("--texts", type=int, default=24)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--batch-tokens", type=int, default=4096)
    args = p.parse_args()

    corpus = get_profile(args.profile).corpus
    lm = load_model(args.model)
    kept, _ = filtered_samples(args.dataset)
    rows = [r for r in lm.encode(sample_texts(kept, args.texts, 0), args.max_tokens) if len(r) > 5]
    spent: dict[str, float] = defaultdict(float)

    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            spent[name] += time.perf_counter() - t0
            return out
        return wrapper

    analysis.capture_residuals = timed("forward + capture", analysis.capture_residuals)
    analysis.token_ce = timed("own loss (LM head, every token)", analysis.token_ce)
    lens.token_ce = timed("lens LM heads + CE (selected tokens)", lens.token_ce)
    lm.call_block = timed("last block on stacked layers", lm.call_block)
    n_tok, total, selected = sum(map(len, rows)), 0.0, 0
    torch.manual_seed(0)
    for batch in make_batches([len(r) for r in rows], batch_tokens=args.batch_tokens):
        t0 = time.perf_counter()
        rec = analysis.analyse_batch(lm, [rows[i] for i in batch], lens_share=corpus.lens_share,
                                     logit_lens=corpus.logit_lens, keys=batch)
        total += time.perf_counter() - t0
        selected += int((~torch.isnan(torch.from_numpy(rec["inner_loss"][:, 0]))).sum())
    print(f"{lm.describe()}; {args.dataset}: {len(rows)} texts, {n_tok} tokens, {selected} with a lens; profile "
          f"{args.profile} (lens_share {corpus.lens_share}, logit lens {corpus.logit_lens}); {torch.get_num_threads()} "
          f"threads; {total:.1f} s, {n_tok / total:.1f} tok/s")
    accounted = 0.0
    for name in ("forward + capture", "own loss (LM head, every token)", "last block on stacked layers",
                 "lens LM heads + CE (selected tokens)"):
        accounted += spent[name]
        print(f"{name:40s} {spent[name]:8.2f} s  {100 * spent[name] / total:5.1f}%")
    print(f"{'other (selection, scatter, norms)':40s} {total - accounted:8.2f} s  {100 * (total - accounted) / total:5.1f}%")
    print(f"ratio lens_head_share = {spent['lens LM heads + CE (selected tokens)'] / total:.3f}")
    print(f"ratio last_block_share = {spent['last block on stacked layers'] / total:.3f}")
    print(f"ratio forward_share = {spent['forward + capture'] / total:.3f}")


if __name__ == "__main__":
    main()
