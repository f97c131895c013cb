"""GPU check: the per-token numbers on CUDA equal the CPU reference, and what a GPU buys.

For every family x {eager, sdpa} (tiny randomly initialised models, the test suite's): the analysis records
(norms, Eq. 14 inner loss, final loss), the step geometry, the one-pass per-token gradients, notebook 07's descent
records (part 1 and part 2) and notebook 05's surrogate rows on CUDA in float32 against the same weights on CPU; bfloat16 on CUDA against float32 (how far a half-precision run moves the
norms and the Table 1 verdicts); ``device_map="auto"`` against a plain ``.to("cuda")``. Then throughput on a
random Llama-architecture model of about 1B parameters in bfloat16: forward tokens/s, the analysis (paper profile
settings) as forward-equivalents, and per-token gradients one pass per text vs one backward per token.

    python benchmarks/gpu_check.py            (prints one line per check, "ALL CHECKS PASSED" or the failures)
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import FAMILIES, tiny_model  # noqa: E402

from helpers import CompendiumError  # noqa: E402
from helpers.lm.load import wrap_model  # noqa: E402
from helpers.residual.descent_records import batch_records  # noqa: E402
from helpers.residual.descent_steps import step_records  # noqa: E402
from helpers.residual.geometry import step_geometry  # noqa: E402
from helpers.residual.hooks import pad_batch  # noqa: E402
from helpers.residual.pertoken import per_token_grads, per_token_grads_naive  # noqa: E402
from helpers.residual.records import analyse_batch  # noqa: E402
from helpers.surrogates.experiment import eigen_records  # noqa: E402

ROWS = [[5, 17, 3, 99, 42, 8, 61, 23, 7, 11, 2, 90], [4, 4, 8, 15, 16, 23, 42], [1, 2, 3, 4, 5, 6, 7, 8, 9]]
FAILURES: list[str] = []
DEVICE = "cuda"  # --device cpu: a dry run of the script itself on a machine without a GPU


def check(name: str, ok: bool, detail: str) -> None:
    """Print one check's line and remember a failure."""
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        FAILURES.append(name)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference relative to the largest magnitude (NaN-aware)."""
    a, b = np.nan_to_num(np.asarray(a, np.float64)), np.nan_to_num(np.asarray(b, np.float64))
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def flag_flips(a: dict, b: dict, names: list[str]) -> int:
    """How many finite entries of the 0/1 verdict columns ``names`` differ between records ``a`` and ``b``."""
    return sum(int(((a[k] != b[k]) & np.isfinite(a[k])).sum()) for k in names)


def on_device(lm, device: str, dtype: torch.dtype = torch.float32):
    """The same weights on ``device`` in ``dtype`` (a copy)."""

    model = copy.deepcopy(lm.model).to(device=device, dtype=dtype)
    return wrap_model(model, lm.tokenizer, name=lm.name, fingerprint=f"{lm.fingerprint}:{device}:{dtype}")


def family_checks(family: str, attn: str) -> None:
    """CUDA float32 == CPU float32 for records, geometry and gradients; bfloat16's distance from float32."""
    lm = tiny_model(family, attn)
    gpu = on_device(lm, DEVICE)
    a = analyse_batch(lm, ROWS, min_position=2)
    b = analyse_batch(gpu, ROWS, min_position=2)
    err = max(rel(b[k], a[k]) for k in ("norms", "inner_loss", "final_loss"))
    check(f"{family}-{attn} records cuda fp32 vs cpu", err < 1e-4, f"max rel diff {err:.1e}")
    ga, gb = step_geometry(lm, ROWS, 2), step_geometry(gpu, ROWS, 2)
    err = max(rel(gb[k], ga[k]) for k in ga if k.startswith("block_") and "_same" not in k and "_other" not in k)
    check(f"{family}-{attn} geometry cuda vs cpu", err < 1e-4, f"max rel diff {err:.1e}")
    one = per_token_grads(gpu, ROWS)
    naive = [per_token_grads_naive(gpu, row) for row in ROWS]
    ref = torch.cat([n["grads"] for n in naive]).cpu().numpy()
    err = rel(one["grads"].cpu().numpy(), ref)
    check(f"{family}-{attn} per-text grads == per-token grads on cuda", err < 1e-4, f"max rel diff {err:.1e}")
    half = analyse_batch(on_device(lm, DEVICE, torch.bfloat16), ROWS, min_position=2, lens=False, logit_lens=False)
    flips = float(np.mean((np.diff(half["norms"], axis=1) >= 0) != (np.diff(a["norms"], axis=1) >= 0)))
    check(f"{family}-{attn} bfloat16 norms", rel(half["norms"], a["norms"]) < 0.05,
          f"max rel diff {rel(half['norms'], a['norms']):.1e}; {100 * flips:.1f}% of steps flip their verdict")


def descent_checks(family: str, attn: str) -> None:
    """Notebook 07's descent records (slopes, controls, line search, ablation; padded rows, every token in the
    subset) on CUDA in float32 against the CPU: NaN where the CPU has NaN, the descent flags (signs of slopes) the
    same, and every continuous column within 1e-4 of its scale: 1 for a cosine, the largest loss for a loss or a
    loss difference (line search, ablation: the tiny random models' differences are ~1e-4 nats, so a column's own
    largest value would turn float32 rounding of the losses into a large relative error), else its own largest value."""
    lm = tiny_model(family, attn)
    positions, seeds = [[5, 9], [4], [6]], [[11, 12], [13], [14]]
    line = [[True] * len(p) for p in positions]
    alphas = (-1.0, 0.0, 0.5, 1.0, 2.0)
    a = batch_records(lm, ROWS, positions, line, alphas, seeds)
    b = batch_records(on_device(lm, DEVICE), ROWS, positions, line, alphas, seeds)
    loss_scale = float(np.nanmax(np.abs(a["final_loss"])))

    def scale(name: str) -> float:
        if name.startswith("cos_"):
            return 1.0
        if name.startswith(("loss_", "final_loss", "a_", "b_", "abl_")):
            return loss_scale
        return float(np.nanmax(np.abs(a[name]))) if np.isfinite(a[name]).any() else 1.0

    errs = {k: float(np.nanmax(np.abs(a[k] - b[k]))) / max(scale(k), 1e-30) if np.isfinite(a[k]).any() else 0.0
            for k in a if not k.startswith("desc_")}
    worst = max(errs, key=errs.get)
    nan_ok = all(np.array_equal(np.isnan(a[k]), np.isnan(b[k])) for k in a)
    flags = [k for k in a if k.startswith("desc_")]
    flips = flag_flips(a, b, flags)
    total = sum(int(np.isfinite(a[k]).sum()) for k in flags)
    check(f"{family}-{attn} descent records cuda fp32 vs cpu", nan_ok and errs[worst] < 1e-4 and flips <= total // 100,
          f"{len(a)} columns, largest difference {errs[worst]:.1e} of its scale ({worst}), NaN pattern "
          f"{'equal' if nan_ok else 'DIFFERS'}, {flips} of {total} descent flags differ")


def steps_and_surrogate_checks(family: str, attn: str) -> None:
    """Notebook 07 part 1's step records (inner-loss gradients, cosines, random directions) and notebook 05's
    surrogate rows (Proposition 1's two sides, the ratios, the spectra's ends) on CUDA in float32 against the CPU."""
    lm = tiny_model(family, attn)
    gpu = on_device(lm, DEVICE)
    ends = [row[:-1] for row in ROWS]  # each row ends at its current token; its last token is the target
    targets = torch.tensor([row[-1] for row in ROWS])
    out = []
    for model in (lm, gpu):
        ids, mask = pad_batch(ends, 0, model.input_device)
        out.append(step_records(model, ids, mask, targets, 4, torch.Generator().manual_seed(0), 8192))
    a, b = out
    errs = {k: rel(b[k], a[k]) for k in a if not k.startswith(("descent_", "lowers_", "rdescent_"))}
    worst = max(errs, key=errs.get)
    flips = flag_flips(a, b, [k for k in a if k.startswith(("descent_", "lowers_"))])
    check(f"{family}-{attn} descent part 1 cuda fp32 vs cpu", errs[worst] < 1e-4 and flips == 0,
          f"max rel diff {errs[worst]:.1e} ({worst}), {flips} verdicts differ")
    try:
        rows_a, _ = eigen_records(lm, [ROWS[0], ROWS[0][:6]], spectra_samples=1)
    except CompendiumError as exc:  # a family without a block layout has no surrogates (notebook 05 says so)
        print(f"n/a  {family}-{attn} surrogates: {str(exc).split(':')[0]}")
        return
    rows_b, _ = eigen_records(gpu, [ROWS[0], ROWS[0][:6]], spectra_samples=1)
    keys = ("prop1_lhs", "prop1_rhs", "ratio", "real_ratio", "lambda_min", "lambda_max")
    err = max(rel(np.array([r[k] for r in rows_b]), np.array([r[k] for r in rows_a])) for k in keys)
    same = [(r["prop1"], r["agrees"]) for r in rows_a] == [(r["prop1"], r["agrees"]) for r in rows_b]
    check(f"{family}-{attn} surrogates (notebook 05) cuda fp32 vs cpu", err < 1e-4 and same,
          f"{len(rows_a)} rows, max rel diff {err:.1e}, verdicts {'equal' if same else 'DIFFER'}")


def device_map_check() -> None:
    """``device_map="auto"`` (accelerate's dispatch) gives the numbers of a plain ``.to("cuda")``."""
    lm = tiny_model("llama")
    with tempfile.TemporaryDirectory() as tmp:
        lm.model.save_pretrained(tmp)
        model = AutoModelForCausalLM.from_pretrained(tmp, device_map="auto" if DEVICE == "cuda" else None)
        mapped = wrap_model(model, None, name="mapped")
        err = rel(analyse_batch(mapped, ROWS, 2)["inner_loss"], analyse_batch(on_device(lm, DEVICE), ROWS, 2)["inner_loss"])
    check("device_map=auto vs .to(cuda)", err < 1e-4, f"max rel diff {err:.1e}")


def sync() -> None:
    """Wait for the GPU (nothing on CPU)."""
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeat: int = 3) -> float:
    """Best wall time of ``repeat`` calls, CUDA synchronised."""
    best = float("inf")
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def throughput(layers: int, d: int, tokens: int) -> None:
    """A random Llama-architecture model in bfloat16: forward, analysis and gradient ratios in one run."""


    cfg = LlamaConfig(vocab_size=32000, hidden_size=d, intermediate_size=int(2.75 * d), num_hidden_layers=layers,
                      num_attention_heads=d // 128, num_key_value_heads=max(1, d // 512), max_position_embeddings=4096)
    torch.manual_seed(0)
    lm = wrap_model(LlamaForCausalLM(cfg).to(DEVICE, torch.bfloat16).eval(), None, name="random-llama")
    n_params = sum(p.numel() for p in lm.model.parameters())
    rows = [list(np.random.default_rng(i).integers(0, 32000, tokens)) for i in range(8)]
    ids = torch.tensor(rows, device=DEVICE)
    fwd = timed(lambda: lm.model(input_ids=ids, use_cache=False, logits_to_keep=1))
    ana = timed(lambda: analyse_batch(lm, rows, lens_share=0.02, logit_lens=False), repeat=2)
    one = timed(lambda: per_token_grads(lm, rows[:1]), repeat=2)
    naive = timed(lambda: per_token_grads_naive(lm, rows[0]), repeat=1)
    print(f"model: random Llama, {n_params / 1e9:.2f}B parameters, {layers} layers, d={d}, bfloat16, "
          f"{torch.cuda.get_device_name() if DEVICE == 'cuda' else 'cpu'}; batch 8 x {tokens} tokens")
    print(f"forward {8 * tokens / fwd:,.0f} tok/s; analysis (paper settings) {8 * tokens / ana:,.0f} tok/s")
    print(f"ratio forward_equivalents = {ana / fwd:.2f}")
    print(f"ratio grad_per_text_vs_per_token = {naive / one:.1f}  ({tokens} tokens: {one:.3f} s vs {naive:.2f} s)")


def main() -> int:
    """Run every check, then the throughput run; exit 1 on any failed check."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--d", type=int, default=2048)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a dry run of the script")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 2
    for family in FAMILIES:
        for attn in ("eager", "sdpa"):
            try:
                family_checks(family, attn)
                descent_checks(family, attn)
                steps_and_surrogate_checks(family, attn)
            except Exception as exc:  # noqa: BLE001 -- report every family, then fail
                check(f"{family}-{attn}", False, f"{type(exc).__name__}: {exc}")
    device_map_check()
    throughput(args.layers, args.d, args.tokens)
    print("ALL CHECKS PASSED" if not FAILURES else f"FAILED: {', '.join(FAILURES)}")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    raise SystemExit(main())
