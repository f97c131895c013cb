"""The descent test's three slopes, line search and ablation (helpers.residual.descent_records) against finite
differences and direct evaluations of each step's loss curve phi(alpha), on every family x attention
implementation (float64 weights; some families' norms compute in float32, so the differences are good to ~1e-4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FAMILY_ATTN, tiny_model

from helpers.residual.descent_records import ablated_steps, batch_records, token_generators
from helpers.residual.hooks import capture_halfsteps, pad_batch
from helpers.residual.splice import (
    block_keys_values,
    continuation_grads,
    continuation_losses,
    predictor_losses,
    stacked_keys_values,
)

# rows of one length: in float64 a padded row's fully masked pad queries give NaN keys and values in eager
# attention (0 * NaN); padded batches are covered in float32 by tests/residual/test_splice.py
ROWS = [[5, 17, 3, 99, 42, 8, 61, 23, 7, 11], [4, 4, 8, 15, 16, 23, 42, 4, 8, 15], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]
POSITIONS = [[5, 8], [4], [7]]
SEEDS = [[11, 12], [13], [14]]  # one per current token
ALPHAS = (-1.0, 0.0, 0.5, 1.0, 2.0)
# central-difference step in alpha: most families round somewhere through float32 (norms, rotary tables), so h is
# small against the curvature and large against that rounding; GPT-2 and OPT compute in float64 throughout, and
# OPT's ReLU has kinks within 1e-3 of some steps
H = {"gpt2": 1e-5, "opt": 1e-5}


class Curves:
    """phi_a (the Eq. 14 predictor) and phi_b (the rest of the network) of each step, from the public splice
    functions on a clean pass of its own."""

    def __init__(self, lm):
        self.lm, n = lm, lm.n_layers
        ids, mask = pad_batch(ROWS)
        self.cap, mid = capture_halfsteps(lm, ids, mask, every_block=True)
        self.r = torch.tensor([i for i, p in enumerate(POSITIONS) for _ in p])
        self.c = torch.tensor([x for p in POSITIONS for x in p])
        self.t = ids[self.r, self.c + 1]
        z = self.cap.states[:, self.r, self.c]
        self.steps = {"block": (z[:-1], z[1:] - z[:-1])}
        if mid is not None:
            zm = mid[:, self.r, self.c]
            self.steps |= {"attn": (z[:-1], zm - z[:-1]), "ffn": (zm, z[1:] - zm)}
        self.kv = block_keys_values(lm, self.cap.states, self.cap.layer_kwargs)
        self.last = {"block": stacked_keys_values(lm, n - 1, self.cap.states[:n], self.cap.block_kwargs)}
        self.last["attn"] = self.last["block"]
        if mid is not None:
            self.last["ffn"] = stacked_keys_values(lm, n - 1, mid, self.cap.block_kwargs)

    def phi_b(self, step: str, layer: int, step_of: torch.Tensor | float) -> torch.Tensor:
        """Final loss [N] with block ``layer``'s update ``step`` replaced by ``alpha * dz`` (a float) or by the
        vector ``step_of`` [N, D]."""
        start, dz = (x[layer] for x in self.steps[step])
        new = step_of * dz if isinstance(step_of, float) else step_of
        if step == "attn":
            zero = torch.zeros(len(self.r))
            return continuation_losses(self.lm, self.kv, self.cap.layer_kwargs, torch.full_like(self.r, layer),
                                       self.r, self.c, start, self.t, update_scale=zero, update_shift=new)
        return continuation_losses(self.lm, self.kv, self.cap.layer_kwargs, torch.full_like(self.r, layer + 1),
                                   self.r, self.c, start + new, self.t)

    def phi_a(self, step: str, layer: int, step_of: torch.Tensor | float) -> torch.Tensor:
        start, dz = (x[layer] for x in self.steps[step])
        new = step_of * dz if isinstance(step_of, float) else step_of
        b = len(ROWS)
        loss, _ = predictor_losses(self.lm, self.last[step], self.cap.block_kwargs, layer * b + self.r, self.r,
                                   self.c, start + new, self.t)
        return loss

    def slope(self, phi, step: str, layer: int, at: float) -> torch.Tensor:
        h = H.get(self.lm.family, 1e-3)
        return (phi(step, layer, at + h) - phi(step, layer, at - h)) / (2 * h)


def _records(lm):
    return batch_records(lm, ROWS, POSITIONS, [[True] * len(p) for p in POSITIONS], ALPHAS, SEEDS)


@pytest.mark.parametrize(("family", "attn"), FAMILY_ATTN)
def test_slopes_equal_finite_differences_of_their_curves(family, attn):
    """``inner`` = phi_a'(0), ``true`` = phi_b'(0) (the start of the step), ``true_end`` = phi_b'(1), for the block
    and both half-steps at every layer; the descent indicator is the slope's sign; ``true`` and ``true_end``
    differ (the start-of-step slope is not the end-of-step one that the test used before)."""
    lm = tiny_model(family, attn=attn)
    lm.model.double()
    rec, cur = _records(lm), Curves(lm)
    error, start_end = 0.0, 0.0
    for step in cur.steps:
        for layer in range(lm.n_layers):
            for name, phi, at in (("inner", cur.phi_a, 0.0), ("true", cur.phi_b, 0.0), ("true_end", cur.phi_b, 1.0)):
                got, want = torch.from_numpy(rec[f"slope_{name}_{step}"][layer]), cur.slope(phi, step, layer, at)
                torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-4)
                error = max(error, float((got - want).abs().max()))
                assert (rec[f"desc_{name}_{step}"][layer] == (rec[f"slope_{name}_{step}"][layer] < 0)).all()
        start_end = max(start_end, float(abs(rec[f"slope_true_{step}"] - rec[f"slope_true_end_{step}"]).max()))
    assert start_end > 5 * error  # the differences resolve the start of a step from its end


@pytest.mark.parametrize(("family", "attn"), FAMILY_ATTN)
def test_line_search_and_ablation_equal_direct_evaluations(family, attn):
    """Every line-search column is its phi at that alpha; each ablation column is the loss with the update's
    component along -g (gradient), a random component of that norm, or all but that component removed, minus the
    loss of the whole update, read by the predictor (a) and the rest of the network (b)."""
    lm = tiny_model(family, attn=attn)
    lm.model.double()
    rec, cur = _records(lm), Curves(lm)
    for step in cur.steps:
        for layer in range(lm.n_layers):
            for a in ALPHAS:
                for way, phi in (("a", cur.phi_a), ("b", cur.phi_b)):
                    torch.testing.assert_close(torch.from_numpy(rec[f"{way}_{step}_{a:g}"][layer]),
                                               phi(step, layer, a), rtol=1e-6, atol=1e-8)
    for step in cur.steps:
        pred = "ffn" if step == "ffn" else "block"
        for layer in range(lm.n_layers):
            start, dz = (x[layer] for x in cur.steps[step])
            _, g_inner = predictor_losses(lm, cur.last[pred], cur.cap.block_kwargs, layer * len(ROWS) + cur.r, cur.r,
                                          cur.c, start, cur.t, grad=True)
            rest = cur.kv, cur.cap.layer_kwargs, torch.full_like(cur.r, layer + (step != "attn")), cur.r, cur.c
            _, g_true = continuation_grads(lm, *rest, start, cur.t,
                                           update_scale=torch.zeros(len(cur.r)) if step == "attn" else None)
            for kind, g in (("inner", g_inner), ("true", g_true)):
                unit = g / g.norm(dim=-1, keepdim=True)
                along = (dz * unit).sum(-1, keepdim=True) * unit
                for comp, new in (("gradient", dz - along), ("orthogonal", along)):
                    for way, phi in (("a", cur.phi_a), ("b", cur.phi_b))[: 2 if kind == "true" else 1]:
                        want = phi(step, layer, new) - phi(step, layer, 1.0)
                        torch.testing.assert_close(torch.from_numpy(rec[f"abl_{way}_{kind}_{step}_{comp}"][layer]),
                                                   want, rtol=1e-6, atol=1e-8)
                assert torch.isfinite(torch.from_numpy(rec[f"abl_a_{kind}_{step}_random"][layer])).all()


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_layer_stride_and_the_twins_subset_keep_the_values(family):
    """A layer stride computes the subset's columns at every stride-th layer and the last, with the values of the
    full computation; ``full=False`` (the twin's null) keeps the true slope and the predictor's readings and
    leaves the rest-of-network readings and the controls empty."""
    lm = tiny_model(family)
    line = [[True] * len(p) for p in POSITIONS]
    every = batch_records(lm, ROWS, POSITIONS, line, ALPHAS, SEEDS)
    strided = batch_records(lm, ROWS, POSITIONS, line, ALPHAS, SEEDS, line_stride=2)
    lean = batch_records(lm, ROWS, POSITIONS, line, ALPHAS, SEEDS, full=False)
    kept, dropped = [0, 2], [1]  # 3 layers: stride 2 keeps 0 and the last
    for name in ("slope_true_block", "a_block_2", "b_block_-1", "desc_true_rand_block"):
        torch.testing.assert_close(strided[name][kept], every[name][kept])
        assert np.isnan(strided[name][dropped]).all()
    for name in ("slope_true_block", "a_block_0.5", "slope_inner_block", "abl_a_true_block_gradient",
                 "abl_a_true_block_random"):
        torch.testing.assert_close(lean[name], every[name])
    for name in ("b_block_2", "abl_b_true_block_gradient", "desc_inner_rand_block"):
        assert np.isnan(lean[name]).all() and not np.isnan(every[name]).any()


def test_ablated_steps_split_the_update():
    """gradient + orthogonal parts rebuild the update; the gradient part is orthogonal to g; the random part has
    the gradient component's norm; a token's random part is its own generator's (the same without the others)."""
    dz, g = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    parts = ablated_steps(dz, g, token_generators(list(range(5))))
    alone = ablated_steps(dz[3:], g[3:], token_generators([3, 4]))
    torch.testing.assert_close(alone["random"], parts["random"][3:])
    torch.testing.assert_close(parts["gradient"] + parts["orthogonal"], dz)
    torch.testing.assert_close((parts["gradient"] * g).sum(-1), torch.zeros(5, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close((dz - parts["random"]).norm(dim=-1), parts["orthogonal"].norm(dim=-1))
