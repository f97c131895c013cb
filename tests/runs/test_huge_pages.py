"""`make reproduce` runs its kernels with ``THP_MEM_ALLOC_ENABLE=1`` (PyTorch's large CPU tensors on transparent
huge pages, helpers.commands.KERNEL_ENV): memory backing only, so the analysis records must be bit-for-bit those of
a run without it. The model here has a head large enough (30k words) that its logits take the huge-page path."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

SCRIPT = r"""
import sys, numpy as np, torch
from transformers import AutoModelForCausalLM, LlamaConfig
from helpers.lm.load import wrap_model
from helpers.residual.records import analyse_batch
torch.manual_seed(0)
cfg = LlamaConfig(num_hidden_layers=3, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, vocab_size=30000)
lm = wrap_model(AutoModelForCausalLM.from_config(cfg).eval(), None, name="tiny-llama-30k")
rows = [torch.randint(2, 30000, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in (90, 70, 40)]
rec = analyse_batch(lm, rows, logit_lens=True)
np.savez(sys.argv[1], **{k: v for k, v in rec.items()})
"""


def _run(path, thp: str) -> dict[str, np.ndarray]:
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": thp}
    subprocess.run([sys.executable, "-c", SCRIPT, str(path)], check=True, env=env, timeout=300)
    with np.load(path) as data:
        return dict(data)


def test_records_are_bitwise_the_same_with_huge_pages(tmp_path):
    plain, huge = _run(tmp_path / "plain.npz", "0"), _run(tmp_path / "huge.npz", "1")
    assert plain.keys() == huge.keys() and {"inner_loss", "logit_lens", "norms"} <= plain.keys()
    for key in plain:
        np.testing.assert_array_equal(plain[key], huge[key], err_msg=key)
    assert np.isfinite(plain["inner_loss"]).any()  # the lens ran
