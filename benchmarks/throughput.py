"""Throughput of the analysis pipeline against a plain forward pass, measured in one run on the same tokens.

    python benchmarks/throughput.py                       # default model on this machine's CPU
    python benchmarks/throughput.py --random llama-7b --device cuda --dtype bfloat16 --texts 64 --max-tokens 512

Modes: (a) plain forward pass (logits for every token, as a user's forward would), (b) residual capture
only, (c) the analysis users get (capture, norms, the model's own loss, then the last-block lens and the logit
lens only on the tokens the tables need: final loss <= 1 plus a seeded random 10% share), (c_full) the same
with the lenses on every token (the previous default), (d) a naive reference computing the same reported
numbers (per text, per layer: last block, final norm and LM head on every token in a Python loop, batch
size 1; the tables then keep the tokens they need), (c_paper) the analysis in the paper profile's settings (the
last-block lens on final loss <= 1 plus a seeded 2% share, no logit lens). Each mode runs in its own subprocess so
its peak memory (RSS on CPU, allocated on GPU) is its own. Prints tokens/s, analytical multiply-accumulates per
token, GMAC/s and the ratios; then the peak memory of (c) with 4x the texts (the pipeline streams, so it should
stay flat). The last two ratios: ``forward_equivalents`` = time of (c_paper) / time of (a) on the same batches, and
``grad_per_text_vs_per_token`` = one backward per token / one pass per text for the per-token loss gradients at
every layer (:func:`benchmarks.grad_per_text.compare`; ``--grad-texts`` random texts of ``--grad-tokens``
tokens, on ``grad_per_text``'s small random Llama or, with ``--grad-model same``, on the model under test).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RANDOM_SHAPES = {  # "arch" picks the transformers class; the rest is the config of the released model
    "llama-7b": dict(arch="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096),
    "llama-13b": dict(arch="llama", hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                      num_key_value_heads=40, vocab_size=32000, max_position_embeddings=4096),
    "qwen2-1.5b": dict(arch="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                       num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
                       rope_theta=1000000.0, tie_word_embeddings=True),
}


def load(args):
    """The model under test: a spec via load_model, or a randomly initialised model of a real shape."""
    import torch

    from helpers.lm.load import DTYPES, load_model, wrap_model

    if args.random:
        from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

        torch.manual_seed(0)
        shape = dict(RANDOM_SHAPES[args.random])
        config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM),
                                 "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[shape.pop("arch")]
        cfg = config_cls(**shape)
        torch.set_default_dtype(DTYPES[args.dtype])
        with torch.device(args.device):
            model = model_cls(cfg)
        torch.set_default_dtype(torch.float32)
        return wrap_model(model.eval(), None, name=f"random-{args.random}", fingerprint=f"random-{args.random}")
    return load_model(args.model, device=args.device, dtype=args.dtype)


def token_rows(lm, args, n_texts):
    """Token rows from WikiText-103 (filtered), or random ids for a random model."""
    import random

    if lm.tokenizer is None:
        rng = random.Random(0)
        vocab = lm.model.config.vocab_size
        return [[rng.randrange(vocab) for _ in range(args.max_tokens)] for _ in range(n_texts)]
    from helpers.corpus.samples import load_samples

    texts = load_samples("wikitext-103")[:n_texts]
    return lm.encode(texts, args.max_tokens)


def macs_per_token(cfg, seq_len: int) -> dict[str, float]:
    """Analytical multiply-accumulates per token: one block, the LM head (causal attention ~ seq_len/2 keys)."""
    d = cfg.hidden_size
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or d // heads
    kv = getattr(cfg, "num_key_value_heads", heads) * head_dim
    ff = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * d
    gated = getattr(cfg, "hidden_act", "") in ("silu", "gelu_pytorch_tanh") and getattr(cfg, "model_type", "") != "gpt2"
    proj = d * heads * head_dim * 2 + 2 * d * kv
    attn = 2 * heads * head_dim * seq_len / 2
    mlp = (3 if gated else 2) * d * ff
    return {"block": proj + attn + mlp, "head": d * cfg.vocab_size}


def sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def run_mode(args, mode: str, n_texts: int, queue) -> None:
    """Child process: time one mode and report tokens, seconds and peak memory."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from helpers.residual.hooks import capture_residuals, pad_batch
    from helpers.residual.records import analyse_batch
    from helpers.runs.batching import make_batches

    torch.set_num_threads(args.threads or torch.get_num_threads())
    lm = load(args)
    rows = token_rows(lm, args, n_texts)
    dev = lm.input_device
    pad = getattr(lm.tokenizer, "pad_token_id", 0) if lm.tokenizer is not None else 0
    batches = [[rows[i] for i in b] for b in make_batches([len(r) for r in rows], batch_tokens=args.batch_tokens)]
    if str(dev).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    # warm-up on the first batch (not timed)
    with torch.inference_mode():
        ids, mask = pad_batch(batches[0][:1], pad, dev)
        lm.model(input_ids=ids, attention_mask=mask)
    sync(dev)
    lens_tokens = 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        if mode == "a_forward":
            for b in batches:
                ids, mask = pad_batch(b, pad, dev)
                lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
        elif mode == "b_capture":
            for b in batches:
                ids, mask = pad_batch(b, pad, dev)
                capture_residuals(lm, ids, mask)
        elif mode in ("c_analysis", "c_full", "c_paper"):
            share = {"c_analysis": args.lens_share, "c_full": None, "c_paper": args.paper_lens_share}[mode]
            for i, b in enumerate(batches):
                rec = analyse_batch(lm, b, min_position=4, token_budget=args.token_budget, lens_share=share,
                                    logit_lens=mode != "c_paper", keys=[1000 * i + j for j in range(len(b))])
                lens_tokens += int((~np.isnan(rec["inner_loss"][:, 0])).sum())
        elif mode == "d_naive":
            last = lm.n_layers - 1
            for row in rows:
                ids, mask = pad_batch([row], pad, dev)
                cap = capture_residuals(lm, ids, mask)
                tgt = ids[0, 5:]
                for layer in range(lm.n_layers):
                    h = lm.call_block(last, cap.states[layer], cap.block_kwargs)
                    F.cross_entropy(lm.logits(h[0, 4:-1]).float(), tgt, reduction="none").cpu()
                for layer in range(lm.n_layers + 1):
                    F.cross_entropy(lm.logits(cap.states[layer, 0, 4:-1]).float(), tgt, reduction="none").cpu()
    sync(dev)
    seconds = time.perf_counter() - t0
    if str(dev).startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n_tokens = sum(len(r) for r in rows)
    kept = sum(max(0, len(r) - 5) for r in rows)
    queue.put({"mode": mode, "tokens": n_tokens, "kept": kept, "lens_tokens": lens_tokens or kept,
               "seconds": seconds, "peak_mib": peak,
               "cfg": lm.model.config.to_dict(), "label": lm.describe()})


def measure(args, mode: str, n_texts: int) -> dict:
    """Run one mode in a fresh subprocess (its own peak memory)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=run_mode, args=(args, mode, n_texts, q))
    p.start()
    out = q.get()
    p.join()
    return out


def measure_grads(args) -> dict:
    """Per-token loss gradients at every layer, one pass per text against one backward per token, on the same
    ``--grad-texts`` random texts of ``--grad-tokens`` tokens (:func:`benchmarks.grad_per_text.compare`)."""
    import torch

    from benchmarks.grad_per_text import compare, random_rows, tiny_llama

    torch.set_num_threads(args.grad_threads or torch.get_num_threads())
    lm = tiny_llama(4, 256, 4096, max(args.grad_tokens, 128)) if args.grad_model == "tiny" else load(args)
    rows = random_rows(args.grad_texts, args.grad_tokens, int(lm.model.config.vocab_size))
    out = compare(lm, rows, repeats=1)
    if not out["agree"]:
        raise SystemExit(f"per-token gradients: one pass per text and one backward per token disagree ({out})")
    return {**out, "label": lm.describe()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--random", choices=sorted(RANDOM_SHAPES), default=None, help="randomly initialised model of a real shape")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--texts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch-tokens", type=int, default=1024, help="padded tokens per batch (16 x 64 = one full batch)")
    ap.add_argument("--lens-share", type=float, default=0.1)
    ap.add_argument("--token-budget", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--paper-lens-share", type=float, default=0.02, help="random lens share of (c_paper)")
    ap.add_argument("--modes", default="a_forward,b_capture,c_analysis,c_full,d_naive,c_paper")
    ap.add_argument("--grad-texts", type=int, default=1, help="texts for the gradient ratio (0: skip it)")
    ap.add_argument("--grad-tokens", type=int, default=128)
    ap.add_argument("--grad-model", choices=["tiny", "same"], default="tiny",
                    help="gradient ratio on grad_per_text's random Llama (4 x 256) or on the model under test")
    ap.add_argument("--grad-threads", type=int, default=1,
                    help="torch threads of the gradient ratio (0: default; many small ops, so 1 is fastest on CPU)")
    ap.add_argument("--json", default=None, help="also write the measurements to this file")
    args = ap.parse_args()

    from transformers import PretrainedConfig

    results = {m: measure(args, m, args.texts) for m in args.modes.split(",")}
    first = next(iter(results.values()))
    cfg = PretrainedConfig.from_dict(first["cfg"])
    for key in ("hidden_size", "num_attention_heads", "vocab_size", "num_hidden_layers"):
        if not hasattr(cfg, key):
            setattr(cfg, key, first["cfg"].get({"hidden_size": "n_embd", "num_attention_heads": "n_head",
                                                  "num_hidden_layers": "n_layer"}.get(key, key)))
    L = cfg.num_hidden_layers
    mac = macs_per_token(cfg, args.max_tokens)
    def analysis_macs(r: dict, heads: int) -> float:
        """capture + the model's own loss (one head on the kept tokens) + L last-block passes + ``heads`` heads
        on the tokens that get the lenses (L inner-loss + L logit-lens layers, or L without the logit lens)."""
        return (2 * L * mac["block"] + mac["head"] * r["kept"] / r["tokens"]
                + heads * mac["head"] * r["lens_tokens"] / r["tokens"])

    per_token = {m: (L * mac["block"] + mac["head"] if m == "a_forward" else L * mac["block"] if m == "b_capture"
                     else analysis_macs(r, L if m == "c_paper" else 2 * L)) for m, r in results.items()}
    print(f"model: {first['label']}; device {args.device}, dtype {args.dtype}; {args.texts} texts x <= "
          f"{args.max_tokens} tokens = {first['tokens']} tokens ({first['kept']} with a loss at position >= 5); "
          f"torch threads {args.threads or 'default'}")
    print(f"{'mode':<12}{'tokens/s':>12}{'lens tok':>10}{'GMAC/token':>12}{'GMAC/s':>10}{'peak MiB':>10}")
    rate = {}
    for m, r in results.items():
        tps = r["tokens"] / r["seconds"]
        rate[m] = (tps, tps * per_token[m] / 1e9)
        print(f"{m:<12}{tps:>12.1f}{r['lens_tokens']:>10}{per_token[m] / 1e9:>12.3f}{rate[m][1]:>10.2f}"
              f"{r['peak_mib']:>10.0f}")
    ratios = {}
    if "c_analysis" in results:
        big = measure(args, "c_analysis", 4 * args.texts)
        print(f"peak memory of (c): {results['c_analysis']['peak_mib']:.0f} MiB with {args.texts} texts, "
              f"{big['peak_mib']:.0f} MiB with {4 * args.texts}")
        ratios["peak_memory_4x_texts (target <= 1.10)"] = big["peak_mib"] / results["c_analysis"]["peak_mib"]
    if {"c_analysis", "d_naive"} <= rate.keys():
        ratios["analysis_over_naive_tokens_per_s (target >= 5)"] = rate["c_analysis"][0] / rate["d_naive"][0]
    if {"c_analysis", "c_full"} <= rate.keys():
        ratios["analysis_over_full_lens_tokens_per_s"] = rate["c_analysis"][0] / rate["c_full"][0]
    if {"a_forward", "c_analysis"} <= rate.keys():
        ratios["analysis_over_forward_gmac_per_s (target >= 0.8)"] = rate["c_analysis"][1] / rate["a_forward"][1]
        ratios["analysis_over_forward_tokens_per_s"] = rate["c_analysis"][0] / rate["a_forward"][0]
    if {"a_forward", "b_capture"} <= rate.keys():
        ratios["capture_over_forward_tokens_per_s (target >= 0.9)"] = rate["b_capture"][0] / rate["a_forward"][0]
    if {"a_forward", "c_paper"} <= results.keys():
        ratios["forward_equivalents"] = results["c_paper"]["seconds"] / results["a_forward"]["seconds"]
    grads = measure_grads(args) if args.grad_texts > 0 else None
    if grads is not None:
        print(f"per-token gradients ({grads['label']}; {args.grad_texts} x {args.grad_tokens} tokens, "
              f"{grads['scored']} scored, {grads['layers']} layers): one pass per text {grads['fast_s']:.3f} s, "
              f"one backward per token {grads['naive_s']:.2f} s, max gap {grads['grad_gap']:.1e}")
        ratios["grad_per_text_vs_per_token"] = grads["naive_s"] / grads["fast_s"]
    for name, value in ratios.items():
        print(f"ratio {name} = {value:.2f}")
    if args.json:
        data = {m: {k: v for k, v in r.items() if k != "cfg"} for m, r in results.items()}
        Path(args.json).write_text(json.dumps({**data, "grads": grads, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
