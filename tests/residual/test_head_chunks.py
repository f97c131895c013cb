"""The LM head in vocabulary-sized row chunks gives the same cross-entropy as one call on every row."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from conftest import tiny_model

from helpers.residual import lens


def test_chunked_head_equals_one_call(monkeypatch):
    lm = tiny_model("qwen2")
    h = torch.randn(300, lm.d_model)
    targets = torch.randint(0, 101, (300,))
    whole = F.cross_entropy(lm.logits(h).float(), targets, reduction="none")
    monkeypatch.setattr(lens, "LOGIT_BUDGET", 101 * 20)  # 20 rows a call: 15 calls
    torch.testing.assert_close(lens.token_ce(lm, h, targets), whole, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(lens.token_ce(lm, h, targets, chunk=7), whole, rtol=1e-6, atol=1e-6)
