"""Direct test of the meta-learning view (issue 12): is each layer's update a descent step on the inner loss?

For the current token ``n``, three updates are compared with ``g``, the gradient of the Eq. 14 inner loss with
respect to the state the update starts from: ``block`` ``z^{l+1}_n - z^l_n`` and ``attn`` (attention half-step)
``z_mid - z^l_n`` against ``g(z^l_n)``; ``ffn`` (FFN half-step) ``z^{l+1}_n - z_mid`` against ``g(z_mid)``.
The inner loss of a state: the prefix states at that stage go through the LAST block (with the model's own call
arguments, :func:`helpers.capture.capture_residuals`), the final norm and the LM head; cross-entropy with the true
next token. The prefix is held fixed: each sampled token is its own row, cut right after it, so the loss at a row's
last position is the only loss of the row and the gradient there is exactly ``dL_n / dz_n``. Layers are stacked
along the batch dimension. Per (token, layer): cos(dz, -g), descent (``<dz, g> < 0``), whether the step lowers
the inner loss, the same for random directions of the same norm (seeded), and the norms around the half-steps.
Half-step states come from a hook on the block submodule whose input is the residual stream after attention
(:data:`MID_MODULES`); parallel-residual blocks (GPT-NeoX/Pythia by default) have no half-step.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_map

from helpers import CompendiumError
from helpers.capture import Capture, capture_residuals, pad_batch
from helpers.lens import expand_block_kwargs, layer_chunk_size
from helpers.models import LoadedModel
from helpers.profiles import DescentProfile
from helpers.store import atomic_write_text, config_hash, repo_path

STEPS = ("block", "attn", "ffn")
PUBLISHED_GROWTH_GPT2XL = 1.045  # residual norms grow ~exponentially, about 1.045x per layer in GPT2-XL
VERSION = 1  # bump when the records change meaning (cache key)

# family -> block submodule whose INPUT is the residual stream after the attention half-step.
# Gemma 2/3 add post_attention_layernorm(attn) to the residual: the state after attention enters the pre-FFN norm.
MID_MODULES = {
    "gpt2": "ln_2", "llama": "post_attention_layernorm", "mistral": "post_attention_layernorm",
    "qwen2": "post_attention_layernorm", "qwen3": "post_attention_layernorm", "gemma": "post_attention_layernorm",
    "gemma2": "pre_feedforward_layernorm", "gemma3": "pre_feedforward_layernorm",
    "gemma3_text": "pre_feedforward_layernorm", "gpt_neox": "post_attention_layernorm", "opt": "final_layer_norm",
}


def halfstep_module(lm: LoadedModel) -> str | None:
    """Name of the block submodule whose input is the state after the attention half-step; ``None`` when the
    block has no such state (parallel residual: attention and FFN read the same input; post-norm OPT)."""
    cfg = lm.model.config
    if lm.family == "gpt_neox" and getattr(cfg, "use_parallel_residual", True):
        return None
    if lm.family == "opt" and not getattr(cfg, "do_layer_norm_before", True):
        return None
    if lm.family not in MID_MODULES:
        raise CompendiumError(f"no half-step hook is known for family '{lm.family}': add its pre-FFN module to "
                              f"helpers.descent.MID_MODULES")
    return MID_MODULES[lm.family]


def capture_halfsteps(lm: LoadedModel, input_ids: torch.Tensor,
                      attention_mask: torch.Tensor) -> tuple[Capture, torch.Tensor | None]:
    """One model call: the residual capture (states ``[L+1, B, T, D]``, last block's call arguments) and the
    states after every attention half-step ``[L, B, T, D]`` (``None`` without half-steps), taken by a forward
    pre-hook on :func:`halfstep_module` of every block (OPT's module sees them flattened to ``[B*T, D]``)."""
    name, store = halfstep_module(lm), {}

    def hook(i: int):
        def pre(module, args, kwargs):
            store[i] = args[0] if args else next(iter(kwargs.values()))

        return pre

    handles = [getattr(blk, name).register_forward_pre_hook(hook(i), with_kwargs=True)
               for i, blk in enumerate(lm.blocks)] if name else []
    try:
        cap = capture_residuals(lm, input_ids, attention_mask)
    finally:
        for h in handles:
            h.remove()
    if name is None:
        return cap, None
    shape = cap.states.shape[1:]
    return cap, torch.stack([store[i].detach().reshape(shape).to(cap.states.device) for i in range(lm.n_layers)])


def _plain(kwargs: dict) -> dict:
    """Normal (autograd-usable) copies of the inference-mode tensors of a captured call."""
    return tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, kwargs)


@contextmanager
def _frozen(lm: LoadedModel) -> Iterator[None]:
    """No parameter gradients while active (only input gradients are computed); flags restored on exit."""
    params = [p for p in lm.model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def inner_loss_grad(lm: LoadedModel, states: torch.Tensor, block_kwargs: dict, last: torch.Tensor,
                    targets: torch.Tensor, current: torch.Tensor | None = None, grad: bool = True,
                    token_budget: int = 8192) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Eq. 14 inner loss ``[K, B]`` (float32 or better) of the token at position ``last[b]`` of each row, for K
    stacks of prefix states ``states [K, B, T, D]``, and its gradient ``[K, B, D]`` with respect to that token's
    state (the prefix held fixed). ``current [K, B, D]`` replaces the token's state (prefix unchanged). Rows must end at
    ``last`` (right padding only): the loss of position ``last`` is then the only loss of its row."""
    k_all, batch, seq, dim = states.shape
    if current is not None and tuple(current.shape) != (k_all, batch, dim):
        raise ValueError(f"current must be [K, B, D] = {(k_all, batch, dim)}, got {tuple(current.shape)}")
    rows = torch.arange(batch, device=states.device)
    per_call = layer_chunk_size(batch, seq, token_budget)
    losses, grads = [], []
    last_dev = next(lm.blocks[-1].parameters()).device
    with _frozen(lm), torch.set_grad_enabled(grad):
        for k0 in range(0, k_all, per_call):
            k = min(k_all, k0 + per_call) - k0
            x = states[k0 : k0 + k].clone()
            if current is not None:
                x[:, rows, last] = current[k0 : k0 + k].to(x.dtype)
            x = x.reshape(k * batch, seq, dim).to(last_dev).requires_grad_(grad)
            kwargs = _plain(expand_block_kwargs(block_kwargs, batch, k))
            y = lm.call_block(lm.n_layers - 1, x, kwargs).reshape(k, batch, seq, dim)
            y = y[:, rows.to(y.device), last.to(y.device)]
            logits = lm.logits(y.reshape(k * batch, dim))
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float64 models stay float64
            ce = F.cross_entropy(logits, targets.to(logits.device).repeat(k), reduction="none")
            losses.append(ce.detach().reshape(k, batch).cpu())
            if grad:
                (gx,) = torch.autograd.grad(ce.sum(), x)
                gx = gx.reshape(k, batch, seq, dim)[:, rows.to(gx.device), last.to(gx.device)]
                grads.append(gx.to(logits.dtype).cpu())
    return torch.cat(losses), (torch.cat(grads) if grad else None)


def _up(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32, or in its own dtype when that is wider (norms of fp16/bf16 states in float32)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.double(), b.double(), dim=-1, eps=1e-30)


def same_norm_directions(dz: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` random directions per update ``dz [..., D]``, Gaussian, each rescaled to ``||dz||``: ``[n, ..., D]``."""
    r = torch.randn((n, *dz.shape), generator=gen, dtype=torch.float64)
    return r / r.norm(dim=-1, keepdim=True) * dz.double().norm(dim=-1, keepdim=True)


@dataclass(frozen=True)
class TokenSample:
    """Sampled current tokens, one per text: its row (the text's tokens up to and including it) and target."""

    dataset: list[str]
    text: list[int]
    rows: list[list[int]]
    targets: list[int]

    def __len__(self) -> int:
        return len(self.rows)

    def key(self) -> str:
        """Hash of the rows and targets (cache key)."""
        return config_hash({"rows": self.rows, "targets": self.targets})


def sample_tokens(lm: LoadedModel, texts: dict[str, list[str]], max_tokens: int, min_position: int = 4,
                  seed: int = 0) -> TokenSample:
    """One current token per text at a seeded uniform position in ``[min_position, len - 2]`` of the text's first
    ``max_tokens`` tokens (the last kept token is only a target); texts too short for one are skipped."""
    rng = random.Random(seed)
    cfg = lm.model.config
    context = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
    max_tokens = min(max_tokens, context or max_tokens)
    out: dict[str, list] = {"dataset": [], "text": [], "rows": [], "targets": []}
    for ds, items in texts.items():
        for i, ids in enumerate(lm.encode(items, max_tokens)):
            if len(ids) < min_position + 2:
                continue
            pos = rng.randint(min_position, len(ids) - 2)
            for key, value in (("dataset", ds), ("text", i), ("rows", ids[: pos + 1]), ("targets", ids[pos + 1])):
                out[key].append(value)
    if not out["rows"]:
        raise CompendiumError(f"no text keeps more than {min_position + 1} tokens: raise max_tokens")
    return TokenSample(**out)


def _batch_records(lm: LoadedModel, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor, n_random: int,
                   gen: torch.Generator, token_budget: int) -> dict[str, np.ndarray]:
    """Per (layer, row) arrays ``[L, B]`` of one right-padded batch whose rows end at their current token."""
    n = lm.n_layers
    cap, mid = capture_halfsteps(lm, ids, mask)
    last = mask.sum(1) - 1
    rows = torch.arange(ids.shape[0])
    z = _up(cap.states[:, rows, last]).cpu()  # [L+1, B, D]
    loss_in, g_in = inner_loss_grad(lm, cap.states[:n], cap.block_kwargs, last, targets, token_budget=token_budget)
    nan = torch.full_like(loss_in[:1], float("nan"))
    loss_next = torch.cat([loss_in[1:], nan])  # inner loss after the block (undefined after the last block)
    out = {"norm_in": z[:n].norm(dim=-1), "norm_out": z[1:].norm(dim=-1), "loss_in": loss_in}
    steps = {"block": (z[1:] - z[:n], g_in, loss_in, loss_next)}
    if mid is not None:
        zm = _up(mid[:, rows, last]).cpu()
        loss_mid, g_mid = inner_loss_grad(lm, mid, cap.block_kwargs, last, targets, token_budget=token_budget)
        out.update(norm_mid=zm.norm(dim=-1), loss_mid=loss_mid)
        steps.update(attn=(zm - z[:n], g_in, loss_in, loss_mid), ffn=(z[1:] - zm, g_mid, loss_mid, loss_next))
    for step, (dz, g, before, after) in steps.items():
        dots = (dz.double() * g.double()).sum(-1)
        r = same_norm_directions(dz, n_random, gen)
        out[f"cos_{step}"] = _cos(dz, -g)
        out[f"descent_{step}"] = (dots < 0).double()
        out[f"lowers_{step}"] = torch.where(after.isnan(), float("nan"), (after < before).double())
        out[f"rcos_{step}"] = _cos(r[0], -g)
        out[f"rdescent_{step}"] = ((r * g.double()).sum(-1) < 0).double().mean(0)
    # random step of the block's norm at the current token, the prefix moved to layer l+1 as by the real step
    cur = z[: n - 1].double() + same_norm_directions(steps["block"][0][: n - 1], 1, gen)[0]
    loss_r, _ = inner_loss_grad(lm, cap.states[1:n], cap.block_kwargs, last, targets, current=cur, grad=False,
                                token_budget=token_budget)
    out["rlowers_block"] = torch.cat([(loss_r < loss_in[: n - 1]).double(), nan.double()])
    return {k: v.double().numpy() for k, v in out.items()}


def run_descent(lm: LoadedModel, tokens: TokenSample, n_random: int = 8, seed: int = 0, batch_tokens: int = 4096,
                token_budget: int = 8192, cache_dir: str | Path | None = None, weights: str = "trained",
                model: str | None = None) -> pd.DataFrame:
    """Descent records of every sampled token at every layer (one row per token and layer), cached under
    ``cache_dir/descent`` by model fingerprint, tokens and settings. ``model`` names the model pair (default
    ``lm.label``), ``weights`` says 'trained' or 'untrained twin'."""
    key = config_hash({"fp": lm.fingerprint, "tokens": tokens.key(), "n_random": n_random, "seed": seed, "v": VERSION})
    path = repo_path(cache_dir) / "descent" / f"{key}.csv" if cache_dir else None
    if path is not None and path.is_file():
        df = pd.read_csv(path)
    else:
        gen = torch.Generator().manual_seed(seed)
        order = sorted(range(len(tokens)), key=lambda i: len(tokens.rows[i]))
        pad = getattr(lm.tokenizer, "pad_token_id", None) or 0
        parts, start = [], 0
        while start < len(order):
            end = start + 1  # rows sorted by length: the padded batch is (rows) x (its last row's length)
            while end < len(order) and (end - start + 1) * len(tokens.rows[order[end]]) <= batch_tokens:
                end += 1
            idx = order[start:end]
            ids, mask = pad_batch([tokens.rows[i] for i in idx], pad, lm.input_device)
            tgt = torch.tensor([tokens.targets[i] for i in idx])
            arrays = _batch_records(lm, ids, mask, tgt, n_random, gen, token_budget)
            keys = {"dataset": [tokens.dataset[i] for i in idx], "text": [tokens.text[i] for i in idx],
                    "position": [len(tokens.rows[i]) - 1 for i in idx]}
            frame = {k: np.repeat(v, lm.n_layers) for k, v in keys.items()}
            frame["layer"] = np.tile(np.arange(lm.n_layers), len(idx))
            parts.append(pd.DataFrame(frame | {k: v.T.reshape(-1) for k, v in arrays.items()}))
            start = end
        df = pd.concat(parts, ignore_index=True).sort_values(["dataset", "text", "layer"], ignore_index=True)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, df.to_csv(index=False))
    df.insert(0, "weights", weights)
    df.insert(0, "model", model or lm.label)
    df["third"] = layer_thirds(lm.n_layers)[df["layer"].to_numpy()]
    df["n_layers"] = lm.n_layers
    return df


@dataclass
class DescentRun:
    """Records of every model and its twin (:func:`run_descent` rows), a caption and file tag per model label,
    and the seconds each model took (load, sample, both runs)."""

    records: pd.DataFrame
    captions: dict[str, str]
    tags: dict[str, str]
    timings: pd.DataFrame


def run_models(specs: list[str], texts: dict[str, list[str]], prof: DescentProfile, profile: str, seed: int = 0,
               cache_dir: str | Path | None = "results/cache", device: str = "cpu") -> DescentRun:
    """Each model of ``specs`` and its untrained twin on the same sampled tokens (``prof``'s per-model sample
    sizes apply; 0 texts skips a model).
    ``"natural"`` is notebook 06's model; it, and a registry model whose package is missing, are skipped with a
    printed note when unavailable."""
    from helpers.data import sample_texts
    from helpers.twins import load_available, untrained_twin

    parts, captions, tags, timings = [], {}, {}, []
    for spec in specs:
        start = time.time()
        n = {ds: prof.texts_for(ds, spec) for ds in texts}
        lm = load_available(spec, profile, cache_dir, seed, device) if any(n.values()) else print(f"{spec}: no texts")
        if lm is None:
            continue
        tokens = sample_tokens(lm, {ds: sample_texts(t, n[ds], seed) for ds, t in texts.items()}, prof.max_tokens,
                               seed=seed)
        parts.append(run_descent(lm, tokens, prof.n_random, seed, cache_dir=cache_dir))
        parts.append(run_descent(untrained_twin(lm, seed), tokens, prof.n_random, seed, cache_dir=cache_dir,
                                 weights="untrained twin", model=lm.label))
        tags[lm.label] = spec.replace("/", "_")
        captions[lm.label] = (f"{lm.describe()}; {len(tokens)} tokens (one per text, position >= 5) of "
                              f"{', '.join(texts)}, <= {prof.max_tokens} tokens per text; {prof.n_random} random "
                              f"directions; untrained twin seed {seed}; profile {profile}")
        timings.append({"model": lm.label, "tokens": len(tokens), "seconds": round(time.time() - start, 1)})
        del lm
        gc.collect()
    if not parts:
        raise CompendiumError(f"none of the models {specs} is available: see the notes above")
    return DescentRun(pd.concat(parts, ignore_index=True), captions, tags, pd.DataFrame(timings))


def layer_thirds(n_layers: int) -> np.ndarray:
    """'first' / 'middle' / 'last' for layers 0..L-1 (``np.array_split`` into three parts)."""
    labels = np.empty(n_layers, dtype=object)
    for name, part in zip(("first", "middle", "last"), np.array_split(np.arange(n_layers), 3), strict=True):
        labels[part] = name
    return labels


# ---------------------------------------------------------------------------------------------------------
# tables and the reading


def _pct(s: pd.Series) -> float:
    return float(100 * s.mean()) if s.notna().any() else float("nan")


def descent_by_layer(rec: pd.DataFrame) -> pd.DataFrame:
    """Per model, weights, step and layer: cos(dz, -g) quartiles, % descent directions, % steps lowering the
    inner loss, and the random baseline (same tokens, same norms)."""
    rows = []
    for (model, weights, layer), d in rec.groupby(["model", "weights", "layer"], sort=False):
        for step in STEPS:
            if f"cos_{step}" not in d or d[f"cos_{step}"].isna().all():
                continue
            c = d[f"cos_{step}"]
            rows.append({"model": model, "weights": weights, "step": step, "layer": layer, "n": len(d),
                         "cos_q25": c.quantile(0.25), "cos_median": c.median(), "cos_q75": c.quantile(0.75),
                         "descent_pct": _pct(d[f"descent_{step}"]), "lowers_pct": _pct(d[f"lowers_{step}"]),
                         "random_cos_median": d[f"rcos_{step}"].median(),
                         "random_descent_pct": _pct(d[f"rdescent_{step}"]),
                         "random_lowers_pct": _pct(d["rlowers_block"]) if step == "block" else float("nan")})
    return pd.DataFrame(rows)


def descent_by_third(rec: pd.DataFrame) -> pd.DataFrame:
    """Per model, step and layer third: % descent directions (and % steps lowering the loss) of the trained model,
    its untrained twin and random directions of the same norm on the trained model's tokens."""
    rows = []
    for (model, third), d in rec.groupby(["model", "third"], sort=False):
        t, u = d[d.weights == "trained"], d[d.weights != "trained"]
        for step in STEPS:
            if f"cos_{step}" not in d or d[f"cos_{step}"].isna().all():
                continue
            rows.append({"model": model, "step": step, "third": third,
                         "layers": f"{d.layer.min()}-{d.layer.max()}", "tokens": t.groupby(["dataset", "text"]).ngroups,
                         "descent_pct": _pct(t[f"descent_{step}"]), "twin_descent_pct": _pct(u[f"descent_{step}"]),
                         "random_descent_pct": _pct(t[f"rdescent_{step}"]),
                         "cos_median": t[f"cos_{step}"].median(), "twin_cos_median": u[f"cos_{step}"].median(),
                         "lowers_pct": _pct(t[f"lowers_{step}"]), "twin_lowers_pct": _pct(u[f"lowers_{step}"]),
                         "random_lowers_pct": _pct(t["rlowers_block"]) if step == "block" else float("nan")})
    out = pd.DataFrame(rows)
    models = list(dict.fromkeys(rec.model))  # the run's order
    rank = (out.model.map(models.index) * 10 + out.step.map(STEPS.index)) * 3 + out.third.map(
        ["first", "middle", "last"].index)
    return out.assign(_r=rank).sort_values("_r", kind="stable").drop(columns="_r").reset_index(drop=True)


def _norm_shares(d: pd.DataFrame) -> dict:
    mid = "norm_mid" in d and d.norm_mid.notna().any()
    return {"attn_decrease_pct": _pct(d.norm_mid < d.norm_in) if mid else np.nan,
            "ffn_decrease_pct": _pct(d.norm_out < d.norm_mid) if mid else np.nan,
            "block_decrease_pct": _pct(d.norm_out < d.norm_in)}


def norm_by_layer(rec: pd.DataFrame) -> pd.DataFrame:
    """Per model, weights and block: median norms before / between / after the half-steps, % of tokens whose
    norm the attention half-step, the FFN half-step and the whole block decrease, median growth ratio."""
    return pd.DataFrame([{"model": m, "weights": w, "layer": layer, "norm_in": d.norm_in.median(),
                          "norm_mid": d.get("norm_mid", pd.Series([np.nan])).median(), "norm_out": d.norm_out.median(),
                          **_norm_shares(d), "ratio_median": (d.norm_out / d.norm_in).median()}
                         for (m, w, layer), d in rec.groupby(["model", "weights", "layer"], sort=False)])


def norm_attribution(rec: pd.DataFrame) -> pd.DataFrame:
    """Which half-step produces the norm decreases, blocks 0..L-2 (the conjecture's layers 0..L-1): % of blocks
    that decrease ||z||, and of those the % whose attention / FFN half-step decreases it; the per-layer growth
    rate over blocks 1..L-2 (block 0's jump from the embeddings left out): the median over tokens of the
    geometric mean ratio, and the median per-block ratio, beside GPT2-XL's published ~1.045."""
    rows = []
    for (model, weights), d in rec.groupby(["model", "weights"], sort=False):
        d = d[d.layer < d.n_layers - 1]
        dec = _norm_shares(d[d.norm_out < d.norm_in])
        inner = d[d.layer > 0]
        logr = np.log(inner.norm_out / inner.norm_in).groupby([inner.dataset, inner.text]).mean()
        rows.append({"model": model, "weights": weights, "block_decrease_pct": _pct(d.norm_out < d.norm_in),
                     "decreases": int((d.norm_out < d.norm_in).sum()),
                     "of_which_attn_decreases_pct": dec["attn_decrease_pct"],
                     "of_which_ffn_decreases_pct": dec["ffn_decrease_pct"],
                     "attn_decrease_pct": _norm_shares(d)["attn_decrease_pct"],
                     "ffn_decrease_pct": _norm_shares(d)["ffn_decrease_pct"],
                     "growth_rate_median": float(np.exp(logr.median())),
                     "block_ratio_median": float((inner.norm_out / inner.norm_in).median()),
                     "published_GPT2-XL": PUBLISHED_GROWTH_GPT2XL})
    return pd.DataFrame(rows)


def _by_third(values: pd.Series) -> str:
    return " / ".join("n/a" if np.isnan(v) else f"{v:.0f}%" for v in values)


def reading(thirds: pd.DataFrame, attribution: pd.DataFrame) -> str:
    """The notebook's reading, rendered from the two summary tables (shares by layer third: first / middle / last)."""
    lines = ["**Reading (rendered from this run's numbers; shares by layer third, first / middle / last).**", ""]
    for model, t in thirds.groupby("model", sort=False):
        b = t[t.step == "block"]
        edge = (b.descent_pct - b[["twin_descent_pct", "random_descent_pct"]].max(axis=1)).mean()
        verdict = ("more often a descent direction than both baselines" if edge > 5 else
                   "no more often a descent direction than the baselines" if edge < 1 else
                   "marginally above the baselines")
        cos = b.cos_median.abs().max()
        lines.append(f"- **{model}** (~{b.tokens.iloc[0]} tokens): block updates are descent directions "
                     f"{_by_third(b.descent_pct)} (untrained twin {_by_third(b.twin_descent_pct)}, random directions "
                     f"{_by_third(b.random_descent_pct)}): {verdict} (mean margin {edge:+.0f} points). Median "
                     f"cos(dz, -g) stays within +-{cos:.3f}: " + ("the updates are nearly orthogonal to the gradient, "
                     "a descent direction in sign, far from a gradient step in direction." if cos < 0.2 else
                     "the updates lean visibly towards -g."))
        for step, name in (("attn", "attention"), ("ffn", "FFN")):
            s = t[t.step == step]
            if len(s):
                lines.append(f"  - {name} half-step: descent {_by_third(s.descent_pct)} (twin "
                             f"{_by_third(s.twin_descent_pct)}); lowers the inner loss {_by_third(s.lowers_pct)}.")
        lines.append(f"  - the block step lowers the inner loss {_by_third(b.lowers_pct)} (twin "
                     f"{_by_third(b.twin_lowers_pct)}; a random step of the same norm {_by_third(b.random_lowers_pct)};"
                     f" undefined after the last block).")
    for _, a in attribution.iterrows():
        if np.isnan(a.attn_decrease_pct):
            src = "no half-steps (parallel residual)"
        elif a.decreases == 0:
            src = "none to attribute"
        else:
            gap = a.of_which_attn_decreases_pct - a.of_which_ffn_decreases_pct
            who = "mostly the attention" if gap > 10 else "mostly the FFN" if gap < -10 else "both alike"
            src = (f"of those {a.decreases}, the attention half-step decreases it in "
                   f"{a.of_which_attn_decreases_pct:.0f}%, the FFN half-step in "
                   f"{a.of_which_ffn_decreases_pct:.0f}%: {who}")
        if not np.isnan(a.attn_decrease_pct):
            src += (f" (all half-steps of these blocks: attention decreases ||z|| in {a.attn_decrease_pct:.0f}%, "
                    f"the FFN in {a.ffn_decrease_pct:.0f}%)")
        lines.append(f"- Norm, {a.model} ({a.weights}): {a.block_decrease_pct:.1f}% of (token, block) pairs of "
                     f"blocks 0..L-2 decrease ||z||; {src}. Growth rate {a.growth_rate_median:.3f} per layer over "
                     f"blocks 1..L-2 (median over tokens; published GPT2-XL ~{PUBLISHED_GROWTH_GPT2XL}).")
    lines += ["", "50% and cos 0 are what a direction unrelated to the gradient gives (the random column checks it on "
              "the same tokens); the twin is what the architecture gives without training."]
    return "\n".join(lines)
