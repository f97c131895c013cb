"""Tests of the linear surrogates and Proposition 1 (helpers/surrogates/)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SMOKE, tiny_model

from helpers import CompendiumError
from helpers.lm.families import block_layout
from helpers.surrogates.algebra import (
    augment,
    compare,
    direct_verdict,
    evaluate_map,
    gram_eigh,
    homogeneous,
    prop1_quantities,
)
from helpers.surrogates.constructions import (
    PAPER_ANALOGUES,
    SurrogateOptions,
    attention_map,
    block_surrogates,
    ffn_frozen_map,
    ffn_linear_map,
    frozen_norm,
    rotary_matrices,
)
from helpers.surrogates.experiment import eigen_records, is_control, option_ablation, run_eigen_check
from helpers.surrogates.jacobian import block_jacobian, block_step_function
from helpers.surrogates.reading import reading_markdown, summary_markdown
from helpers.surrogates.record import capture_sample
from helpers.surrogates.report import (
    JACOBIAN_NOTE,
    Provenance,
    agreement_table,
    table2,
    table2_with_paper,
    table_caption,
)
from helpers.surrogates.weights import ffn_weights, gpt2_attention_weights

SAMPLE = [5, 17, 3, 42, 8, 99, 23, 61, 7, 30, 11]


def prop1_verdict(lam: np.ndarray, u: np.ndarray, x: np.ndarray) -> int:
    """Proposition 1's verdict on ``x``: +1 the condition holds strictly, 0 tie, -1 it fails."""
    q = prop1_quantities(lam, u, x)
    return compare(q["lhs"], q["rhs"])


# ----------------------------------------------------------------------------- Proposition 1


def test_prop1_agrees_with_direct_check_on_random_matrices():
    rng = np.random.default_rng(0)
    seen = {1: 0, -1: 0}
    for trial in range(300):
        d = int(rng.integers(2, 12))
        scale = rng.uniform(0.3, 1.7)
        w = scale * rng.standard_normal((d, d)) / np.sqrt(d)
        if trial % 3 == 0:  # near-orthogonal matrices give near-ties: the hard cases
            q, _ = np.linalg.qr(rng.standard_normal((d, d)))
            w = q * (1 + rng.uniform(-1e-3, 1e-3))
        x = rng.standard_normal(d)
        lam, u = gram_eigh(w)
        q1 = prop1_quantities(lam, u, x)
        # the two sides are ||Wx||^2 and ||x||^2 (U orthogonal, so a == b)
        assert np.allclose(q1["a"], q1["b"], atol=1e-10)
        assert q1["lhs"] == pytest.approx(np.sum((w @ x) ** 2), rel=1e-10)
        assert q1["rhs"] == pytest.approx(np.sum(x**2), rel=1e-10)
        p, dv = prop1_verdict(lam, u, x), direct_verdict(w, x)
        assert p == dv
        seen[p] = seen.get(p, 0) + 1
    assert seen[1] > 20 and seen[-1] > 20  # both outcomes exercised


def test_prop1_exact_tie_on_orthogonal_matrix():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    x = rng.standard_normal(6)
    lam, u = gram_eigh(q)
    assert np.allclose(lam, 1.0)
    assert prop1_verdict(lam, u, x) == 0 and direct_verdict(q, x) == 0
    assert compare(1.0, 1.0 + 1e-6) == -1  # outside the tie tolerance it is a verdict


def test_augmented_matrix_gives_affine_verdict():
    rng = np.random.default_rng(2)
    for _ in range(100):
        w, c, x = rng.standard_normal((5, 5)) * 0.5, rng.standard_normal(5), rng.standard_normal(5)
        expected = np.sign(np.sum((w @ x + c) ** 2) - np.sum(x**2))
        wa = augment(w, c)
        lam, u = gram_eigh(wa)
        assert prop1_verdict(lam, u, homogeneous(x, True)) == expected
        assert direct_verdict(wa, homogeneous(x, True)) == expected


# ----------------------------------------------------------------------------- GPT-2 construction


def _plain_loop_w_mhsa(attn, z: torch.Tensor) -> torch.Tensor:
    """Eq. 10 with explicit loops over heads and context tokens, Conv1D slices written out."""
    w = attn.c_attn.weight.detach().double()  # [D, 3D], y = x @ w
    wo_full = attn.c_proj.weight.detach().double()  # [D, D], rows read the concatenated heads
    d = w.shape[0]
    n_heads = attn.num_heads
    dh = d // n_heads
    out = torch.zeros(d, d, dtype=torch.float64)
    for h in range(n_heads):
        cols = slice(h * dh, (h + 1) * dh)
        w_q = w[:, 0 * d:1 * d][:, cols].T  # [dh, D]
        w_k = w[:, 1 * d:2 * d][:, cols].T
        w_v = w[:, 2 * d:3 * d][:, cols].T
        w_o = wo_full[cols, :].T  # [D, dh]
        for i in range(z.shape[0]):
            zi = z[i][:, None]
            out += w_o @ w_v @ zi @ zi.T @ w_k.T @ w_q
    return out


def test_gpt2_construction_equals_plain_loop():
    lm = tiny_model("gpt2")
    attn = lm.blocks[1].attn
    z = torch.randn(7, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = _plain_loop_w_mhsa(attn, z)
    got = attention_map(gpt2_attention_weights(attn), z, None, None, SurrogateOptions()).a  # Eq. 10
    assert torch.allclose(got, ref, rtol=1e-10, atol=1e-10)
    # and it is the real module's attention with softmax replaced by raw scores (no bias, no scale)
    qkv = z @ attn.c_attn.weight.detach().double()
    q, k, v = qkv.split(32, dim=-1)
    heads = lambda t: t.reshape(t.shape[0], 4, 8).transpose(0, 1)  # noqa: E731
    qh, kh, vh = heads(q), heads(k), heads(v)
    scores = torch.einsum("hd,hnd->hn", qh[:, -1], kh)
    mixed = torch.einsum("hn,hnd->hd", scores, vh).reshape(-1)
    assert torch.allclose(got @ z[-1], mixed @ attn.c_proj.weight.detach().double(), rtol=1e-9, atol=1e-9)


def test_gpt2_w_linear_equals_plain_loop_composition():
    lm = tiny_model("gpt2")
    rec = capture_sample(lm, SAMPLE)[2]
    z = rec.hidden.double()
    blk = lm.blocks[2]
    w_mhsa = _plain_loop_w_mhsa(blk.attn, z)
    w_ffn = blk.mlp.c_proj.weight.detach().double().T @ blk.mlp.c_fc.weight.detach().double().T
    eye = torch.eye(32, dtype=torch.float64)
    ref = (eye + w_ffn) @ (eye + w_mhsa)
    got = block_surrogates(lm, 2, rec, ("linear",))["linear"]
    assert got.c is None
    assert torch.allclose(got.a, ref, rtol=1e-9, atol=1e-9)


def test_options_change_the_surrogate_and_bias_makes_it_affine():
    lm = tiny_model("gpt2")
    rec = capture_sample(lm, SAMPLE)[1]
    base = block_surrogates(lm, 1, rec, ("linear",))["linear"]
    for opts in (SurrogateOptions(layernorm=True), SurrogateOptions(scale=True), SurrogateOptions(bias=True)):
        other = block_surrogates(lm, 1, rec, ("linear",), opts)["linear"]
        assert not torch.allclose(other.a, base.a) or other.c is not None, opts
    assert block_surrogates(lm, 1, rec, ("linear",), SurrogateOptions(bias=True))["linear"].c is not None
    scaled = block_surrogates(lm, 1, rec, ("linear",), SurrogateOptions(scale=True))["linear"]
    # with the FFN removed from the picture, scaling attention scales W_MHSA exactly
    w_ffn = ffn_linear_map(ffn_weights(lm.blocks[1].mlp)).a
    eye = torch.eye(32, dtype=torch.float64)
    m0 = torch.linalg.solve(eye + w_ffn, base.a) - eye
    m1 = torch.linalg.solve(eye + w_ffn, scaled.a) - eye
    assert torch.allclose(m1, m0 * lm.blocks[1].attn.scaling, rtol=1e-7, atol=1e-9)


# ----------------------------------------------------------------------------- parts: norms, FFN, rotary


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3"])
def test_frozen_norm_and_frozen_ffn_are_exact_at_the_token(family):
    lm = tiny_model(family)
    with torch.no_grad():  # make the norms non-trivial
        for p in lm.model.parameters():
            if p.dim() == 1:
                p.add_(0.3 * torch.randn_like(p))
    layout = block_layout(lm.family)
    blk = lm.blocks[1]
    x = torch.randn(32, dtype=torch.float64) * 3
    for name in (layout.norm_attn, layout.norm_mlp):
        norm = getattr(blk, name)
        m = frozen_norm(norm, x)
        ref = norm.double()(x[None])[0]
        norm.float()
        # HF's RMSNorms compute in float32 internally, so the reference is only float32-exact
        assert torch.allclose(m(x), ref, rtol=1e-6, atol=1e-6)
        assert not torch.allclose(m(x), x, atol=1e-2)
    mlp = getattr(blk, layout.mlp)
    f = ffn_weights(mlp)
    exact = ffn_frozen_map(f, x, bias=True)
    assert torch.allclose(exact(x), mlp.double()(x[None])[0], rtol=1e-10, atol=1e-10)
    mlp.float()
    if f.gated:
        with pytest.raises(CompendiumError):
            ffn_linear_map(f)


def test_rotary_matrices_match_transformers():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    t, dh = 5, 8
    pos = torch.arange(t, dtype=torch.float64)
    inv = 1.0 / (10000 ** (torch.arange(0, dh, 2, dtype=torch.float64) / dh))
    ang = torch.cat([pos[:, None] * inv, pos[:, None] * inv], dim=-1)
    cos, sin = ang.cos(), ang.sin()
    q = torch.randn(1, 1, t, dh, dtype=torch.float64)
    ref, _ = apply_rotary_pos_emb(q, q, cos[None], sin[None])
    mats = rotary_matrices(cos, sin)
    got = torch.einsum("tab,tb->ta", mats, q[0, 0])
    assert torch.allclose(got, ref[0, 0], atol=1e-12)


def test_unsupported_family_and_construction_are_user_errors():
    with pytest.raises(CompendiumError):
        block_layout("gpt_neox")
    lm = tiny_model("gpt2")
    rec = capture_sample(lm, SAMPLE)[0]
    with pytest.raises(CompendiumError):
        block_surrogates(lm, 0, rec, ("nonsense",))


# ----------------------------------------------------------------------------- real block calls


@pytest.mark.parametrize("family,attn", [("gpt2", "sdpa"), ("gpt2", "eager"), ("llama", "sdpa"), ("llama", "eager"),
                                         ("gemma3", "sdpa")])
def test_capture_matches_capture_residuals_and_step_matches_full_call(family, attn):
    from helpers.residual.hooks import capture_residuals

    lm = tiny_model(family, attn=attn)
    recs = capture_sample(lm, SAMPLE)
    ids = torch.tensor([SAMPLE])
    cap = capture_residuals(lm, ids, torch.ones_like(ids))
    for layer, rec in enumerate(recs):
        assert torch.allclose(rec.hidden, cap.states[layer, 0], atol=1e-6)
        assert torch.allclose(rec.out_last, cap.states[layer + 1, 0, -1], atol=1e-5)
        step = block_step_function(lm.blocks[layer], rec)
        with torch.no_grad():
            assert torch.allclose(step(rec.hidden[-1]), rec.out_last, atol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3"])
def test_jacobian_matches_finite_differences_of_the_full_block_call(family):
    lm = tiny_model(family)
    lm.model.double()
    rec = capture_sample(lm, SAMPLE)[1]
    blk = lm.blocks[1]
    kwargs = {k: v for k, v in rec.kwargs.items() if k not in ("past_key_values", "use_cache")}

    def full_call(x: torch.Tensor) -> torch.Tensor:  # the real block on the whole sample, last row replaced
        h = rec.hidden.clone()
        h[-1] = x
        out = blk(h[None], **kwargs)
        return (out[0] if isinstance(out, tuple) else out)[0, -1]

    x = rec.hidden[-1].clone()
    # HF's RMSNorms compute in float32 even in a float64 model: larger steps (scaled to the input,
    # ~0.01 / 0.2 of |x| per coordinate), looser tolerance there
    eps, atol = {"gpt2": (1e-6, 1e-7), "llama": (1e-3, 1e-4), "gemma3": (1e-2, 1e-4)}[family]
    with torch.no_grad():
        fd = torch.stack([(full_call(x + eps * e) - full_call(x - eps * e)) / (2 * eps)
                          for e in torch.eye(32, dtype=torch.float64)], dim=1)
    jacs = {method: block_jacobian(blk, rec, method=method) for method in ("batched", "jacrev")}
    for method, jac in jacs.items():
        assert torch.allclose(jac, fd, rtol=1e-5, atol=atol), method
    assert torch.allclose(jacs["batched"], jacs["jacrev"], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(fd, torch.eye(32, dtype=torch.float64), atol=1e-3)  # non-trivial block


def test_prop1_and_direct_agree_on_real_tiny_blocks_and_table():
    rows = []
    for family in ("gpt2", "llama", "gemma3"):
        lm = tiny_model(family)
        r, spectra = eigen_records(lm, [SAMPLE, SAMPLE[:6]], spectra_samples=1)
        for row in r:
            row["model"] = family
        rows += r
        assert spectra and all(np.all(v >= -1e-9) for v in spectra.values())  # Gram matrices are PSD
    assert all(row["prop1"] == row["direct"] for row in rows)
    constructions = {(row["model"], row["construction"]) for row in rows}
    assert ("gpt2", "linear") in constructions and ("llama", "linear") not in constructions
    assert ("llama", "frozen") in constructions and ("gemma3", "jacobian") in constructions
    tab = table2(rows)
    sub = [row for row in rows if row["model"] == "gpt2" and row["construction"] == "linear"]
    assert tab.loc[("gpt2", "linear"), "overall"] == pytest.approx(100 * np.mean([r["meets"] for r in sub]))
    assert tab.loc[("gpt2", "linear"), "n"] == len(sub) == 2 * 3
    jac = [row for row in rows if row["model"] == "gpt2" and row["construction"] == "jacobian"]
    agr = agreement_table(rows)
    expected = 100 * np.mean([r["meets"] == r["real_grows"] for r in jac])
    assert agr.loc[("gpt2", "jacobian"), "agree_%"] == pytest.approx(expected)


def test_evaluate_map_on_an_affine_surrogate():
    lm = tiny_model("gpt2")
    rec = capture_sample(lm, SAMPLE[:5])[0]
    m = block_surrogates(lm, 0, rec, ("linear",), SurrogateOptions(bias=True))["linear"]
    ev = evaluate_map(m, rec.hidden[-1])
    assert m.c is not None and ev["prop1"] == ev["direct"] and ev["ratio"] > 0
    x = rec.hidden[-1].double()
    assert ev["ratio"] == pytest.approx(float(torch.linalg.vector_norm(m(x)) / torch.linalg.vector_norm(x)))


# ----------------------------------------------------------------------------- Table 2 holds analogues only


def _fake_records() -> pd.DataFrame:
    """Rows shaped like run_eigen_check's: a trained model and a control, three constructions, two datasets."""
    rows = []
    for model, ratio, real in (("trained", 50.0, 1.5), ("control", 1.01, 1.2)):
        for ds in ("wikitext-103", "1bw"):
            for layer in range(3):
                for c in ("linear", "frozen", "jacobian"):
                    meets = c != "jacobian" and not (model == "control" and layer == 0)
                    grows = layer != 2
                    rows.append({"sample": 0, "layer": layer, "construction": c, "meets": meets,
                                 "prop1": 1 if meets else -1, "direct": 1 if meets else -1,
                                 "ratio": 0.9 if c == "jacobian" else ratio, "real_ratio": real if grows else 0.8,
                                 "real_grows": grows, "agrees": meets == grows, "model": model, "dataset": ds})
    return pd.DataFrame(rows)


def test_table2_leaves_out_the_jacobian():
    # in a pre-norm block J z_n ~ z_n by construction: its Prop. 1 verdict is no analogue of the paper's 100%
    df = _fake_records()
    tab = table2(df).reset_index()
    assert "jacobian" not in set(tab.construction)
    assert set(tab.construction) == set(PAPER_ANALOGUES)
    assert tab.n.sum() == (df.construction != "jacobian").sum()
    assert "jacobian" not in set(table2_with_paper(df).construction)
    assert table2(df[df.construction == "jacobian"]).empty
    agr = agreement_table(df).reset_index()
    assert "jacobian" in set(agr.construction)  # reported against the real block only
    prov = Provenance({"trained": "a model"}, ("wikitext-103",), 1, 12, "smoke")
    assert JACOBIAN_NOTE in table_caption("05_surrogate_agreement", prov)
    assert "Jacobian is compared with the real block" in table_caption("05_table2_overall", prov)


def test_reading_is_rendered_from_the_numbers():
    df = _fake_records()
    text = reading_markdown(df, controls=["control"], names={"trained": "x", "control": "y"})
    assert "The paper's 100% reproduces on the trained model(s)" in text
    assert "linear 100%" in text and "ratio ||W z_n|| / ||z_n|| spans 50 where the real block" in text
    assert "0.8 to 1.5" in text and "of the 4 matrices whose real block shrinks the norm, 0 fail" in text
    assert "control meets the condition for 67% of the matrices" in text
    assert "not evidence that the blocks are norm-increasing" in text  # 100% met, surrogate off by ~33x
    assert "GPT-2 (124M) is not among them" in text
    changed = df.copy()
    changed.loc[(changed.model == "trained") & (changed.layer == 2) & (changed.construction == "linear"), "meets"] = False
    text2 = reading_markdown(changed, controls=["control"])
    assert "reproduces only in part" in text2 and "linear 67%" in text2
    assert "not evidence" not in text2
    agree = agreement_table(df).reset_index()
    summary = summary_markdown(agree, ["trained", "control"], ["linear", "jacobian"])
    assert summary.count("\n") == 3 and "**trained**, jacobian: meets Prop. 1 1bw 0%" in summary


def test_run_eigen_check_and_ablation_on_the_untrained_twin():
    from helpers.experiments.zoo import untrained_natural

    lm = untrained_natural(SMOKE, seed=3)
    assert lm.family == "gpt2" and is_control(lm)
    texts = ["The history of the city begins with a small fishing village on the river bank near the sea.",
             "Short.", "A second long sentence that has many words in it so that it keeps enough tokens."]
    prof = SMOKE.eigen
    run = run_eigen_check([lm], {"wikitext-103": texts, "1bw": texts[::-1]}, prof=prof, n_samples=2)
    df = run.records
    assert run.controls == [lm.label] and run.names == {lm.label: lm.name}
    assert set(df.dataset) == {"wikitext-103", "1bw"} and set(df.construction) == {"linear", "frozen", "jacobian"}
    assert (df.prop1 == df.direct).all() and len(df) == 2 * 2 * lm.n_layers * 3
    assert set(run.spectra) == {(lm.label, "wikitext-103"), (lm.label, "1bw")}
    abl = option_ablation([lm], run.token_ids["wikitext-103"], prof=prof)
    assert "jacobian" not in set(abl.construction) and abl.options.nunique() == 6
    text = reading_markdown(df, abl, run.controls, run.names)
    assert "**Untrained control.**" in text and "**Exact Jacobian**" in text and "Table 2." not in text


def test_prop1_and_direct_agree_on_the_real_model(real_model):
    ids = real_model.encode(["The history of the city begins with a small fishing village on the river."], 16)[0]
    rows, _ = eigen_records(real_model, [ids], constructions=("frozen", "jacobian"), layers=[0, 14, 29])
    assert len(rows) == 6
    assert all(r["prop1"] == r["direct"] for r in rows)
    assert all(np.isfinite(r["ratio"]) and r["real_ratio"] > 0 for r in rows)


def test_cached_records_equal_the_computed_ones(tmp_path, monkeypatch):
    """Notebook 05's rows and spectra from the run store are the computed ones (every digit), for each family's
    constructions, and the second call computes nothing."""
    from helpers.surrogates import experiment

    for family in ("gpt2", "llama", "gemma3"):
        lm = tiny_model(family)
        direct, spectra = eigen_records(lm, [SAMPLE, SAMPLE[:6]], spectra_samples=1)
        first = experiment.cached_records(lm, [SAMPLE, SAMPLE[:6]], experiment.CONSTRUCTIONS, spectra_samples=1,
                                          cache_dir=str(tmp_path))
        with monkeypatch.context() as m:
            m.setattr(experiment, "eigen_records", lambda *a, **k: pytest.fail("recomputed a cached run"))
            again = experiment.cached_records(lm, [SAMPLE, SAMPLE[:6]], experiment.CONSTRUCTIONS, spectra_samples=1,
                                              cache_dir=str(tmp_path))
        for rows, spec in (first, again):
            pd.testing.assert_frame_equal(pd.DataFrame(rows), pd.DataFrame(direct), check_dtype=False)
            assert spec.keys() == spectra.keys()
            for key, value in spectra.items():
                np.testing.assert_array_equal(spec[key], value)
