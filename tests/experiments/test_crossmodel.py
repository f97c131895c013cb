"""The cross-model table (notebook 08): rows against an independent computation, the twin as the null, the
quantisation flip counts, and findings rendered from the numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SMOKE, tiny_model

from helpers.experiments import cross_rows, crossmodel, zoo
from helpers.experiments.paper import paper_references
from helpers.report import findings
from helpers.residual.records import analyse_batch
from helpers.runs.datasets import DatasetRun

ROWS = [[5, 17, 3, 44, 9, 12, 80, 7, 33, 2, 61, 19], [8, 1, 90, 23, 4, 55, 6, 70, 11, 13], [30, 31, 32, 33, 34, 35, 36]]


def _run(lm, dataset="1bw", min_position=2) -> DatasetRun:
    rec = analyse_batch(lm, ROWS, min_position=min_position)
    rec["text_id"] = rec.pop("sample")
    return DatasetRun(records=rec, dataset=dataset, n_texts=len(ROWS), n_layers=lm.n_layers,
                      min_position=min_position, model_line=lm.describe(), run_dir="")


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3"])
def test_entry_row_matches_hidden_states(family, one_thread):
    """Sequence and pair level of a row equal a recomputation from the model's own hidden states (block inputs
    0..L-1, positions >= min_position), and chance is 2^-(L-1)."""
    lm = tiny_model(family, "eager")
    row = cross_rows.entry_row(zoo.Entry(lm, group="g", role=zoo.TRAINED), _run(lm), n_boot=20)
    seq, pair = [], []
    with torch.no_grad():
        for r in ROWS:
            hs = lm.model(torch.tensor([r]), output_hidden_states=True).hidden_states
            norms = torch.stack([h[0].norm(dim=-1) for h in hs[: lm.n_layers]], dim=1)[2:]  # positions >= 2
            ok = (norms[:, 1:] - norms[:, :-1]) >= 0
            seq += ok.all(1).tolist()
            pair += ok.float().mean(1).tolist()
    assert row["n_tokens"] == len(seq)
    assert row["sequence_pct"] == pytest.approx(100 * np.mean(seq), abs=1e-9)
    assert row["pair_pct"] == pytest.approx(100 * np.mean(pair), abs=1e-4)
    assert row["chance_pct"] == pytest.approx(100 * 2.0 ** -(lm.n_layers - 1))
    assert row["sequence_lo"] <= row["sequence_pct"] <= row["sequence_hi"]


CAL = dict(cal_tokens=50, cal_ln_vocab=10.8, cal_unigram_entropy=7.2, cal_median_first=30.0, cal_median_mid=20.0,
           cal_median_last=3.0, cal_worse_than_uniform_mid_pct=90.0, cal_last_k_below_uniform=2.0)


def _rows() -> pd.DataFrame:
    base = dict(layers=4, n_texts=10, n_tokens=500, steps=3, chance_pct=12.5, inner_tokens=100, inner_all_tokens=50,
                epoch=np.nan, step=np.nan)
    rows = [
        dict(base, model="M", group="m", role="trained", dataset="1bw", sequence_pct=70.0, sequence_lo=65.0,
             sequence_hi=75.0, pair_pct=90.0, pair_lo=88.0, pair_hi=92.0, inner_first=5.0, inner_last=1.0,
             inner_down_pct=100.0, inner_all_first=6.0, inner_all_last=3.0, inner_all_down_pct=100.0,
             **CAL, cal_tau=-0.4, cal_tau_lo=-0.5, cal_tau_hi=-0.3),
        dict(base, model="M twin", group="m", role="untrained twin", dataset="1bw", sequence_pct=99.0, sequence_lo=98.0,
             sequence_hi=100.0, pair_pct=99.5, pair_lo=99.0, pair_hi=100.0, inner_first=np.nan, inner_last=np.nan,
             inner_down_pct=np.nan, inner_tokens=0, inner_all_first=9.0, inner_all_last=9.1, inner_all_down_pct=33.0,
             **CAL, cal_tau=0.01, cal_tau_lo=-0.02, cal_tau_hi=0.04),
    ]
    table = cross_rows.add_twin_columns(pd.DataFrame(rows))
    return pd.concat([table, cross_rows.paper_rows(["1bw"])], ignore_index=True)


def test_twin_columns_paper_rows_and_reader_table():
    full = _rows()
    trained = full[full.role == "trained"].iloc[0]
    assert trained.twin_sequence_pct == 99.0 and trained.twin_pair_pct == 99.5
    gpt2 = full[full.model == "GPT-2 (paper)"].iloc[0]
    assert gpt2.layers == 12 and gpt2.chance_pct == pytest.approx(100 * 2.0**-11)
    shown = cross_rows.reader_table(full)
    text = shown.to_markdown()
    assert "nan" not in text.lower()
    assert shown.loc[0, "sequence % [95% CI]"] == "70.0 [65.0, 75.0]"
    assert shown.loc[0, "untrained twin: sequence / pair %"] == "99.0 / 99.5"
    assert shown.loc[1, "inner loss, layer 0 -> last (final loss <= 1)"] == "-"  # no untrained token passes
    paper = shown[shown.model == "GPT-2 (paper)"].iloc[0]
    assert paper["sequence % [95% CI]"] == "83.2" and paper["tokens"] == "-"


def test_flip_table_counts_flipped_tokens():
    rec = {"text_id": np.array([0, 0, 1, 1]), "position": np.array([4, 5, 4, 5]),
           "norms": np.array([[1, 2, 3, 9], [1, 2, 3, 9], [3, 2, 4, 9], [1, 2, 3, 9]], dtype=np.float32)}
    other = dict(rec, norms=np.array([[1, 2, 3, 9], [2, 1, 0, 9], [3, 2, 4, 9], [1, 2, 3, 9]], dtype=np.float32))
    a = DatasetRun(rec, "1bw", 2, 3, 4, "m", "")
    b = DatasetRun(other, "1bw", 2, 3, 4, "m", "")
    f = cross_rows.flip_table(a, b, "Q4_1")
    assert f["tokens"] == 4
    assert f["sequence flips %"] == 25.0  # token 1 goes from monotone to not
    assert f["step flips %"] == pytest.approx(100 * 2 / 8)  # both of its steps flip
    assert f["sequence change (pp)"] == -25.0 and f["pair change (pp)"] == pytest.approx(-25.0)
    shifted = DatasetRun(dict(rec, position=rec["position"] + 1), "1bw", 2, 3, 4, "m", "")
    with pytest.raises(ValueError, match="different tokens"):
        cross_rows.flip_table(a, shifted, "Q4_1")


def test_reading_and_findings_follow_the_numbers(tmp_path):
    full = _rows()
    full.loc[0, ["vs_twin_sequence_pp", "vs_twin_sequence_lo", "vs_twin_sequence_hi"]] = [-29.0, -35.0, -22.0]
    full.loc[0, ["vs_twin_pair_pp", "vs_twin_pair_lo", "vs_twin_pair_hi"]] = [-9.5, -12.0, -7.0]
    full.loc[0, ["vs_twin_tau", "vs_twin_tau_lo", "vs_twin_tau_hi"]] = [-0.41, -0.5, -0.3]
    text = crossmodel.reading(full, pd.DataFrame())
    assert "below its untrained twin (99.0%; difference -29.0 pp [-35.0, -22.0])" in text
    full.loc[0, ["vs_twin_sequence_lo", "vs_twin_sequence_hi"]] = [-3.0, 1.0]
    assert "not distinguishable from its untrained twin (99.0%" in crossmodel.reading(full, pd.DataFrame())

    full.to_csv(tmp_path / "08_cross_model.csv", index=False)
    md = findings.render(tmp_path, tmp_path)
    # claim 1 is read on the interior layers of the all-tokens sample (both ends are fixed by construction)
    assert ("M, 1bw: **falls across layers** (below ln|V| in the last 2 layers): interior tau -0.40 [-0.50, -0.30] "
            "(model - twin -0.410 [-0.500, -0.300])") in md
    assert "90% of tokens do worse than uniform at the middle layer" in md
    assert "the inner loss falls across the interior layers, beyond its untrained twin, for 1 of 1 models" in md
    short = findings.brief(tmp_path, tmp_path)  # README's version: one row per model, the rest in docs/findings.md
    assert "| M | falls across layers | - | 70.0 (99.0) | - |" in short and "docs/findings.md" in short
    assert "Sequence level **not distinguishable from** the twin (-29.0 pp [-3.0, +1.0])" in md
    assert "pair level **below** the twin (-9.5 pp [-12.0, -7.0])" in md and "nan" not in md.lower()
    assert "of 1 trained (model, dataset) pairs, 0 are below their twin and 0 above it" in md
    assert "training lowers them" not in md
    full["paper_refs"] = None
    full.loc[0, "paper_refs"] = ";".join(paper_references("llama"))  # a Llama model: beside the paper's LLaMA rows
    full.to_csv(tmp_path / "08_cross_model.csv", index=False)
    assert "paper LLaMA-7B 81.0% / 98.7%; paper LLaMA-13B 73.4% / 99.0%; untrained twin" in findings.render(
        tmp_path, tmp_path)
    assert paper_references("qwen2") == ["GPT-2"] and paper_references("gpt2") == ["GPT-2"]
    full.loc[0, "vs_twin_tau_hi"] = 0.02  # the null falls as much: the rule cannot credit training
    full.to_csv(tmp_path / "08_cross_model.csv", index=False)
    assert "M, 1bw: **falls, no more than the untrained twin**" in findings.render(tmp_path, tmp_path)
    quant = pd.DataFrame([{"dataset": "1bw", "weights": "Q4_1", "tokens": 10, "sequence flips %": 3.0,
                           "step flips %": 1.0, "sequence change (pp)": -2.5, "pair change (pp)": 0.4}])
    quant.to_csv(tmp_path / "08_quantisation.csv", index=False)
    md = findings.render(tmp_path, tmp_path)
    assert "at most -2.50 pp (Q4_1, 1bw)" in md and ("Scaled to M's 3 steps, at most 3.0% of its sequence verdicts "
                                                     "would flip (union bound: a ceiling), against a gap to its "
                                                     "untrained twin of -29.0 to -29.0 pp") in md
    flips = pd.DataFrame([{"model": "M", "group": "m", "compared with": "trained", "perturbation": "Q4_K_M round trip",
                           "tokens": 500, "step flips %": 0.5, "sequence flips %": 1.2, "sequence change (pp)": 0.3,
                           "decreases smaller than that %": 10.0}])
    flips.to_csv(tmp_path / "09_geometry_flips.csv", index=False)
    md = findings.render(tmp_path, tmp_path)  # measured directly: the measurement replaces M's union bound
    assert ("Measured directly on M (notebook 09, 500 WikiText-103 tokens): its 4-bit weights after a Q4_K_M round "
            "trip flip 1.2% of its sequence verdicts") in md and "against the 3.0% the union bound" in md
    assert "Scaled to M's" not in md
    text = crossmodel.reading(full, quant)
    assert "would move at most 3.00% of sequence verdicts" in text and "rounding could change" in text


def test_no_twin_and_no_null_leave_no_nan(tmp_path):
    """A trained row without a twin (e.g. the twin failed) and the paper's empty columns never show 'nan'."""
    full = _rows()
    full = cross_rows.add_twin_columns(full[full.role != "untrained twin"])
    assert full.twin_sequence_pct.isna().all()
    full.to_csv(tmp_path / "08_cross_model.csv", index=False)
    md = findings.render(tmp_path, tmp_path)
    text = crossmodel.reading(pd.read_csv(tmp_path / "08_cross_model.csv"), pd.DataFrame())
    shown = cross_rows.reader_table(pd.read_csv(tmp_path / "08_cross_model.csv")).to_markdown()
    for out in (md, text, shown):
        assert "nan" not in out.lower()
    assert "not compared with the twin" in md and "no untrained twin" in text


def test_add_twin_columns_pairs_model_and_twin_on_the_same_tokens(tmp_path, one_thread):
    """The paired difference equals sequence(model) - sequence(twin) and its CI holds it; a checkpoint table read
    back from CSV (epoch as float) still finds epoch 0 as the twin; the twin's own row gets no difference."""
    from helpers.lm.twin import untrained_twin

    lm = tiny_model("llama", "eager", seed=5)
    twin = untrained_twin(lm, seed=0)
    entries = [zoo.Entry(lm, "m", zoo.TRAINED), zoo.Entry(twin, "m", zoo.TWIN),
               zoo.Entry(twin, "nat", zoo.CHECKPOINT, epoch=0, step=0),
               zoo.Entry(lm, "nat", zoo.CHECKPOINT, epoch=2, step=40)]
    runs_of, rows = {}, []
    for e in entries:
        runs_of[cross_rows.entry_key(e.group, e.role, e.epoch)] = {"1bw": _run(e.lm)}
        rows.append(cross_rows.entry_row(e, runs_of[cross_rows.entry_key(e.group, e.role, e.epoch)]["1bw"], n_boot=50))
    pd.DataFrame(rows).to_csv(tmp_path / "rows.csv", index=False)
    table = cross_rows.add_twin_columns(pd.read_csv(tmp_path / "rows.csv"), runs_of, n_boot=200)
    for i in (0, 3):
        r = table.iloc[i]
        assert r.twin_sequence_pct == table.iloc[1].sequence_pct
        assert r.vs_twin_sequence_pp == pytest.approx(r.sequence_pct - r.twin_sequence_pct)
        assert r.vs_twin_pair_pp == pytest.approx(r.pair_pct - r.twin_pair_pct)
        assert r.vs_twin_sequence_lo <= r.vs_twin_sequence_pp <= r.vs_twin_sequence_hi
    assert table.iloc[1].vs_twin_sequence_pp != table.iloc[1].vs_twin_sequence_pp  # NaN: no difference with itself
    assert table.iloc[2].vs_twin_sequence_pp != table.iloc[2].vs_twin_sequence_pp


def test_model_entries_skip_what_is_not_here(monkeypatch, capsys):
    """A hub id that is not in the local cache and an untrained natural model give a note and no entry."""

    monkeypatch.setattr(zoo, "hub_model_cached", lambda repo_id: False)
    assert list(zoo.model_entries("someone/not-here", SMOKE, cache_dir="/nonexistent")) == []
    assert list(zoo.model_entries("natural", SMOKE, cache_dir="/nonexistent")) == []
    out = capsys.readouterr().out
    assert "someone/not-here: not in the local Hugging Face cache" in out and "not trained yet" in out


def test_table1_puts_the_twin_beside_the_model(one_thread):
    """Table 1 (notebook 03) gets the untrained twin's row at the paper's positions, equal to the cross-model row
    computed from the twin's own records, and its reading names the twin's value; the paper rows carry chance."""
    from helpers.experiments import table1 as reports
    from helpers.lm.twin import untrained_twin

    lm = tiny_model("gpt2", "eager", seed=5)
    twin = untrained_twin(lm, seed=0)
    runs, twins = {"1bw": _run(lm)}, {"1bw": _run(twin)}
    table = reports.table1_with_paper(runs, lm.n_layers, 2, lm.label, n_boot=20, twins=twins, twin_label="twin")
    row = table[table.variant == reports.TWIN_VARIANT].iloc[0]
    ref = cross_rows.entry_row(zoo.Entry(twin, "g", zoo.TWIN), twins["1bw"], n_boot=20)
    assert row.model == "twin" and row.sequence_pct == ref["sequence_pct"] and row.pair_pct == ref["pair_pct"]
    assert f"the untrained twin {row.sequence_pct:.1f}%" in reports.reading_table1(
        table, reports.transitions_table(runs, lm.n_layers, 2), 2, lm.label)
    gpt2 = table[table.model == "GPT-2"].iloc[0]
    assert gpt2.steps == 11 and gpt2.chance_pct == pytest.approx(100 * 2.0**-11)
    assert reports.TWIN_VARIANT not in set(reports.table1_with_paper(runs, lm.n_layers, 2, lm.label, n_boot=20).variant)


def test_norms_only_run_matches_the_full_run_and_is_cached_apart(real_model, tmp_path, one_thread):
    """The twin's Table 1 run computes norms only (lens=False): same norms as the full analysis, no lens records,
    and its own cache folder (lens on/off never share a key)."""
    from helpers.runs.datasets import analyse_dataset

    kw = dict(profile=SMOKE, n_texts=2, max_tokens=16, cache_dir=str(tmp_path / "c"),
              filtered_dir=str(tmp_path / "f"), progress=False)
    full = analyse_dataset(real_model, "1bw", **kw)
    bare = analyse_dataset(real_model, "1bw", lens=False, **kw)
    assert bare.run_dir != full.run_dir
    assert "inner_loss" not in bare.records and "final_loss" not in bare.records and "inner_loss" in full.records
    np.testing.assert_array_equal(bare.records["position"], full.records["position"])
    np.testing.assert_allclose(bare.records["norms"], full.records["norms"], rtol=1e-6)
