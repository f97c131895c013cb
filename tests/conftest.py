"""Shared fixtures: tiny randomly initialised models of real architectures, and the real default model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from helpers.config import get_profile
from helpers.lm.load import LoadedModel, load_model, wrap_model

REPO = Path(__file__).resolve().parents[1]
SMOKE = get_profile("smoke")  # the profile as the code takes it (resolved once, typed)


def tiny_model(family: str, attn: str = "sdpa", seed: int = 0) -> LoadedModel:
    """A 3-layer randomly initialised causal LM of the given family (one of ``FAMILIES``)."""
    from transformers import (
        AutoModelForCausalLM,
        Gemma3TextConfig,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        OPTConfig,
        Qwen2Config,
    )

    torch.manual_seed(seed)
    common = dict(vocab_size=101, attn_implementation=attn)
    if family == "gpt2":
        cfg = GPT2Config(n_layer=3, n_embd=32, n_head=4, n_positions=64, **common)
    elif family == "llama":
        cfg = LlamaConfig(num_hidden_layers=3, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=64, **common)
    elif family == "gemma3":
        cfg = Gemma3TextConfig(num_hidden_layers=3, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                               num_key_value_heads=1, head_dim=8, max_position_embeddings=64, sliding_window=4,
                               final_logit_softcapping=30.0, **common)
    elif family == "gpt_neox":
        cfg = GPTNeoXConfig(num_hidden_layers=3, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                            max_position_embeddings=64, **common)
    elif family == "qwen2":
        cfg = Qwen2Config(num_hidden_layers=3, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=64, **common)
    elif family == "opt":
        cfg = OPTConfig(num_hidden_layers=3, hidden_size=32, ffn_dim=64, num_attention_heads=4,
                        word_embed_proj_dim=32, max_position_embeddings=64, **common)
    else:
        raise ValueError(family)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    return wrap_model(model, None, name=f"tiny-{family}")


class Tok:
    """Whitespace 'tokenizer' over small ids, enough for the tiny models."""

    pad_token_id = 0
    bos_token_id = 1

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [[2 + (sum(map(ord, w)) % 97) for w in t.split()] for t in texts]}


def tiny_with_tok(family="llama"):
    lm = tiny_model(family)
    lm.tokenizer = Tok()
    return lm


TEXTS = [" ".join(f"w{i}x{j}" for j in range(6 + (i * 7) % 11)) for i in range(10)]



FAMILIES = ["gpt2", "gpt_neox", "llama", "qwen2", "gemma3", "opt"]
ATTENTIONS = ["eager", "sdpa"]
# every supported family x attention implementation, with ids a reader can select: "gpt2-eager"
FAMILY_ATTN = [pytest.param(f, a, id=f"{f}-{a}") for f in FAMILIES for a in ATTENTIONS]


@pytest.fixture(scope="session")
def real_model() -> LoadedModel:
    """The embedded default model (SmolLM2-135M-Instruct, GGUF), loaded once per test session."""
    return load_model("smollm2-135m")


@pytest.fixture
def one_thread():
    """One CPU thread: fast and stable on a shared 2-core machine (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_SITECUSTOMIZE = '''"""Test instrumentation, installed by tests/conftest.py's instrumented_env for a child process: it patches a
module right after it is first imported (nothing is imported early, so a child that never loads a model stays fast)."""
import importlib.abc
import importlib.util
import os
import signal
import sys

LOAD_LOG = {load_log!r}
KILL_AFTER_CHUNK = {kill_after_chunk!r}


def _patch_load(module):
    real = module.load_model

    def logged(spec="smollm2-135m", *args, **kwargs):
        with open(LOAD_LOG, "a", encoding="utf-8") as fh:
            fh.write(f"{{spec}}\\n")
        return real(spec, *args, **kwargs)

    module.load_model = logged


def _patch_store(module):
    real = module.RunStore.save_chunk

    def save_then_die(self, index, arrays):
        real(self, index, arrays)
        if index == KILL_AFTER_CHUNK:
            os.kill(os.getpid(), signal.SIGKILL)

    module.RunStore.save_chunk = save_then_die


class _AfterImport(importlib.abc.MetaPathFinder):
    def __init__(self, patches):
        self.patches = patches

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.patches:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        run, patch = spec.loader.exec_module, self.patches[fullname]

        def exec_module(module):
            run(module)
            patch(module)

        spec.loader.exec_module = exec_module
        return spec


_patches = {{}}
if LOAD_LOG:
    _patches["helpers.lm.load"] = _patch_load
if KILL_AFTER_CHUNK is not None:
    _patches["helpers.runs.store"] = _patch_store
sys.meta_path.insert(0, _AfterImport(_patches))
'''


def instrumented_env(folder: Path, load_log: Path | None = None, kill_after_chunk: int | None = None) -> dict:
    """Environment variables for a child process (CLI or notebook kernel) with test instrumentation: every
    ``load_model`` call appended to ``load_log``; SIGKILL right after chunk ``kill_after_chunk`` is saved. It is a
    ``sitecustomize`` module in ``folder`` put first on PYTHONPATH, so the package itself carries no test hooks."""
    folder.mkdir(parents=True, exist_ok=True)
    text = _SITECUSTOMIZE.format(load_log=str(load_log) if load_log else None, kill_after_chunk=kill_after_chunk)
    (folder / "sitecustomize.py").write_text(text)
    return {"PYTHONPATH": os.pathsep.join([str(folder), str(REPO)])}
