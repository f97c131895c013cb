"""Per-token loss gradients dL_n/dz_n^l at every layer for one text: one pass per text vs one backward per token.

Times, in one run on the same randomly initialised Llama-architecture model and the same random text,
``per_token_grads`` (own-path attention: one forward and one backward for the whole text) against
``per_token_grads_naive`` (one forward, then one backward per token), checks that they agree, and prints the
``ratio grad_per_text_vs_per_token = X`` line last (naive time / one-pass time). Example (the defaults):

    python benchmarks/grad_per_text.py --layers 4 --d 256 --tokens 128
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from helpers.lm.load import wrap_model
from helpers.residual.pertoken import per_token_grads, per_token_grads_naive


def tiny_llama(layers: int, d: int, vocab: int, context: int, seed: int = 0):
    """A randomly initialised Llama-architecture causal LM (grouped-query attention, 64-wide heads)."""
    torch.manual_seed(seed)
    heads = max(1, d // 64)
    cfg = LlamaConfig(num_hidden_layers=layers, hidden_size=d, intermediate_size=4 * d, num_attention_heads=heads,
                      num_key_value_heads=max(1, heads // 2), max_position_embeddings=context, vocab_size=vocab,
                      attn_implementation="sdpa")
    return wrap_model(AutoModelForCausalLM.from_config(cfg).eval(), None, name=f"llama-{layers}x{d}")


def best_of(repeats: int, fn):
    """(smallest wall time over ``repeats`` calls, the last result)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    """Time both ways, check agreement, print the ratio."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=3, help="timed calls of each way (the fastest counts)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    lm = tiny_llama(args.layers, args.d, args.vocab, max(args.tokens, 128))
    gen = torch.Generator().manual_seed(1)
    row = torch.randint(0, args.vocab, (args.tokens,), generator=gen).tolist()
    per_token_grads(lm, [row[:8]])  # warm-up
    fast_s, fast = best_of(args.repeats, lambda: per_token_grads(lm, [row]))
    naive_s, naive = best_of(args.repeats, lambda: per_token_grads_naive(lm, row))
    scale = float(naive["grads"].abs().max())
    grad_gap = float((fast["grads"] - naive["grads"]).abs().max()) / scale
    loss_gap = float((fast["loss"] - naive["loss"]).abs().max())
    n = fast["grads"].shape[0]
    print(f"{lm.describe()}: d={args.d}, vocab {args.vocab}, {lm.n_params / 1e6:.1f} M parameters; one text of "
          f"{args.tokens} tokens ({n} scored), gradients at {len(fast['layers'])} layers; "
          f"{torch.get_num_threads()} threads; best of {args.repeats}")
    print(f"{'one pass per text (own-path attention)':42s} {fast_s:8.3f} s")
    print(f"{'one backward per token':42s} {naive_s:8.3f} s")
    print(f"max |difference| / max |gradient| = {grad_gap:.2e}; max loss difference = {loss_gap:.2e}")
    if not (grad_gap < 1e-4 and loss_gap < 1e-4):
        raise SystemExit("the two ways disagree")
    print(f"ratio grad_per_text_vs_per_token = {naive_s / fast_s:.1f}")


if __name__ == "__main__":
    main()
