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


def random_rows(count: int, tokens: int, vocab: int, seed: int = 1) -> list[list[int]]:
    """``count`` random texts of ``tokens`` token ids below ``vocab`` (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (tokens,), generator=gen).tolist() for _ in range(count)]


def compare(lm, rows: list[list[int]], repeats: int = 3) -> dict:
    """Time, on the same texts, ``per_token_grads`` (one pass per text) and ``per_token_grads_naive`` (one backward
    per token), fastest of ``repeats`` calls each, and check that they agree: seconds ``fast_s``, ``naive_s``,
    ``grad_gap`` (max |difference| / max |gradient|), ``loss_gap``, ``scored`` tokens, ``layers``, ``agree``."""
    per_token_grads(lm, [rows[0][:8]])  # warm-up
    fast_s, fast = best_of(repeats, lambda: [per_token_grads(lm, [r]) for r in rows])
    naive_s, naive = best_of(repeats, lambda: [per_token_grads_naive(lm, r) for r in rows])
    g_fast, g_naive = (torch.cat([x["grads"] for x in out]) for out in (fast, naive))
    l_fast, l_naive = (torch.cat([x["loss"] for x in out]) for out in (fast, naive))
    grad_gap = float((g_fast - g_naive).abs().max()) / float(g_naive.abs().max())
    loss_gap = float((l_fast - l_naive).abs().max())
    return {"fast_s": fast_s, "naive_s": naive_s, "grad_gap": grad_gap, "loss_gap": loss_gap,
            "scored": g_fast.shape[0], "layers": len(fast[0]["layers"]),
            "agree": grad_gap < 1e-4 and loss_gap < 1e-4}


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
    out = compare(lm, random_rows(1, args.tokens, args.vocab), args.repeats)
    print(f"{lm.describe()}: d={args.d}, vocab {args.vocab}, {lm.n_params / 1e6:.1f} M parameters; one text of "
          f"{args.tokens} tokens ({out['scored']} scored), gradients at {out['layers']} layers; "
          f"{torch.get_num_threads()} threads; best of {args.repeats}")
    print(f"{'one pass per text (own-path attention)':42s} {out['fast_s']:8.3f} s")
    print(f"{'one backward per token':42s} {out['naive_s']:8.3f} s")
    print(f"max |difference| / max |gradient| = {out['grad_gap']:.2e}; max loss difference = {out['loss_gap']:.2e}")
    if not out["agree"]:
        raise SystemExit("the two ways disagree")
    print(f"ratio grad_per_text_vs_per_token = {out['naive_s'] / out['fast_s']:.1f}")


if __name__ == "__main__":
    main()
