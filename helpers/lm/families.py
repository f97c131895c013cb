"""Every per-family fact in one table: where a causal LM keeps its parts, how its block is laid out, what its
tokenizer needs, which parameters are GPT-2-style ``Conv1D`` matrices, and how long its context is.

Adding a family is adding one :class:`Family` row to :data:`FAMILIES` (ARCHITECTURE.md, "add a model family").
Nothing here imports torch: the file checks and the CLI's validation read this table too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from helpers import CompendiumError


@dataclass(frozen=True)
class BlockLayout:
    """Attribute names of a decoder block's parts (``None`` where the family has no such part)."""

    attn: str
    mlp: str
    norm_attn: str
    norm_mlp: str
    post_attn: str | None = None
    post_mlp: str | None = None


@dataclass(frozen=True)
class QuantNames:
    """Parameter names of the family's GGUF round trip (:mod:`helpers.lm.quantise`): block matrices (a regular
    expression), embeddings, and 2-D tensors kept in F32."""

    matrices: re.Pattern
    embeddings: tuple[str, ...]
    kept_2d: tuple[str, ...] = ()
    conv1d: bool = False  # block matrices stored [in, out] (GPT-2's Conv1D), transposed for GGUF


@dataclass(frozen=True)
class Family:
    """One model family (``config.model_type``).

    ``blocks`` / ``final_norm``: attribute paths from the ``*ForCausalLM`` module. ``layout``: the block's parts,
    for the linear surrogates (None: no surrogate). ``mid_module``: the block submodule whose *input* is the
    residual stream after the attention half-step (None: no such state). ``needs_bos``: every text must start
    with BOS (the model breaks without it). ``quant``: names for the GGUF round trip (None: not supported).
    ``attn_update``: the block submodule whose *output* is the attention half-step's update (``mid - z``), where
    ``layout`` does not say it (its ``post_attn``, else its ``attn``).
    """

    name: str
    blocks: str
    final_norm: str
    layout: BlockLayout | None = None
    mid_module: str | None = None
    needs_bos: bool = False
    quant: QuantNames | None = None
    attn_update: str | None = None


_LLAMA_LAYOUT = BlockLayout("self_attn", "mlp", "input_layernorm", "post_attention_layernorm")
# Gemma 2/3 add post_attention_layernorm(attn) to the residual: the state after attention enters the pre-FFN norm
_GEMMA_LAYOUT = BlockLayout("self_attn", "mlp", "input_layernorm", "pre_feedforward_layernorm",
                            "post_attention_layernorm", "post_feedforward_layernorm")
_GPT2_QUANT = QuantNames(re.compile(r"(^|\.)h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$"),
                         ("transformer.wte.weight", "lm_head.weight"), ("transformer.wpe.weight",), conv1d=True)
_LLAMA_QUANT = QuantNames(re.compile(r"(^|\.)layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$"),
                          ("model.embed_tokens.weight", "lm_head.weight"))


def _llama_like(name: str) -> Family:
    return Family(name, "model.layers", "model.norm", _LLAMA_LAYOUT, "post_attention_layernorm", quant=_LLAMA_QUANT)


def _gemma(name: str, layout: BlockLayout | None, mid: str) -> Family:
    return Family(name, "model.layers", "model.norm", layout, mid, needs_bos=True, attn_update="self_attn")


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("gpt2", "transformer.h", "transformer.ln_f", BlockLayout("attn", "mlp", "ln_1", "ln_2"), "ln_2",
           quant=_GPT2_QUANT),
    _llama_like("llama"),
    _llama_like("mistral"),
    _llama_like("qwen2"),
    Family("qwen3", "model.layers", "model.norm", None, "post_attention_layernorm", attn_update="self_attn"),
    _gemma("gemma", None, "post_attention_layernorm"),
    _gemma("gemma2", _GEMMA_LAYOUT, "pre_feedforward_layernorm"),
    _gemma("gemma3", _GEMMA_LAYOUT, "pre_feedforward_layernorm"),
    _gemma("gemma3_text", _GEMMA_LAYOUT, "pre_feedforward_layernorm"),
    # GPT-NeoX/Pythia: parallel residual by default (then no half-step state; see halfstep_module)
    Family("gpt_neox", "gpt_neox.layers", "gpt_neox.final_layer_norm", None, "post_attention_layernorm",
           attn_update="attention"),
    Family("opt", "model.decoder.layers", "model.decoder.final_layer_norm", None, "final_layer_norm",
           attn_update="self_attn"),
)}

# Encoder families that transformers can wrap in a "causal LM" head only when configured as decoders.
ENCODER_FAMILIES = frozenset({
    "bert", "roberta", "xlm-roberta", "xlm-roberta-xl", "electra", "camembert", "ernie", "data2vec-text",
    "bert-generation", "rembert", "roc_bert", "megatron-bert", "xmod", "big_bird", "roformer",
})

# the paths tried, in this order, for a family that has no row (a decoder of a known shape may still work)
BLOCK_PATHS = tuple(dict.fromkeys(f.blocks for f in FAMILIES.values()))
NORM_PATHS = tuple(dict.fromkeys(f.final_norm for f in FAMILIES.values()))


def family(name: str) -> Family | None:
    """The row of ``name`` (a ``config.model_type``), or None for a family without one."""
    return FAMILIES.get(name)


def block_layout(name: str) -> BlockLayout:
    """The :class:`BlockLayout` of a family; a one-line error if it has none (no linear surrogate)."""
    row = FAMILIES.get(name)
    if row is None or row.layout is None:
        known = sorted(n for n, f in FAMILIES.items() if f.layout is not None)
        raise CompendiumError(f"no linear surrogate for model family '{name}': supported are {', '.join(known)}; "
                              f"add its block layout to helpers/lm/families.py")
    return row.layout


def halfstep_module(name: str, config: object) -> str | None:
    """Name of the block submodule whose input is the state after the attention half-step; ``None`` when the
    block has no such state (parallel residual: attention and FFN read the same input; post-norm OPT)."""
    if name == "gpt_neox" and getattr(config, "use_parallel_residual", True):
        return None
    if name == "opt" and not getattr(config, "do_layer_norm_before", True):
        return None
    row = FAMILIES.get(name)
    if row is None or row.mid_module is None:
        raise CompendiumError(f"no half-step hook is known for family '{name}': add its pre-FFN module to "
                              f"helpers/lm/families.py")
    return row.mid_module


def attn_update_module(name: str, config: object) -> str | None:
    """Name of the block submodule whose output is the attention half-step's update (the state after attention
    minus the block's input), so that scaling that output scales the update; ``None`` where the block has no
    half-step state (:func:`halfstep_module`)."""
    if halfstep_module(name, config) is None:
        return None
    row = FAMILIES[name]
    if row.layout is not None:
        return row.layout.post_attn or row.layout.attn
    return row.attn_update


def needs_bos(name: str) -> bool:
    """Whether every text of this family must start with BOS."""
    row = FAMILIES.get(name)
    return bool(row and row.needs_bos)


def context_length(config: object) -> int | None:
    """The model's context (``max_position_embeddings``, GPT-2's ``n_positions``), None when the config has none."""
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
