"""Data filtering, norm statistics, PCA, the cached/resumable/sharded pipeline and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TEXTS, tiny_with_tok

from helpers import CompendiumError
from helpers.corpus.samples import filter_lines, load_filtered, sample_texts
from helpers.corpus.sources import read_lines
from helpers.lm.load import load_model
from helpers.runs import analysis as run_module
from helpers.runs.analysis import AnalysisConfig, merge_records, run_analysis


def test_filter_rules():
    lines = [" ", " = Robert Boulter = ", " = = Career = = ", "too short to keep", "one two three four five six seven eight nine ten"]
    kept, counts = filter_lines("wikitext-103", lines)
    assert kept == ["one two three four five six seven eight nine ten"]
    assert counts == {"lines": 5, "blank": 1, "headings": 2, "short": 1, "kept": 1}
    kept1, counts1 = filter_lines("1bw", [" = not a heading in 1BW but short = "] + lines[-1:])
    assert counts1["headings"] == 0 and counts1["short"] == 1 and len(kept1) == 1


def test_sampling_is_seeded_and_ordered():
    texts = [f"t{i}" for i in range(100)]
    a, b, c = sample_texts(texts, 10, 0), sample_texts(texts, 10, 0), sample_texts(texts, 10, 1)
    assert a == b and a != c and a == sorted(a, key=lambda t: int(t[1:]))


def test_real_corpora_counts():
    wiki, rep = load_filtered("wikitext-103")
    assert rep.lines == 4358 and rep.kept == len(wiki) and rep.headings > 0
    assert all(len(t.split()) >= 10 and not t.startswith("=") for t in wiki)
    bw, rep1 = load_filtered("1bw")
    assert len(bw) == 5000 and rep1.kept > 5000


def test_missing_data_is_one_line_error(tmp_path):
    with pytest.raises(CompendiumError, match="not found") as exc:
        read_lines("1bw", tmp_path)
    assert "\n" not in str(exc.value)
    with pytest.raises(CompendiumError, match="unknown dataset"):
        read_lines("ptb", tmp_path)






def test_cache_reuse_resume_and_shards(tmp_path, monkeypatch):
    lm = tiny_with_tok()
    cfg = AnalysisConfig(max_tokens=12, min_position=2, n_vectors=4, chunk_texts=3)
    full, store = run_analysis(lm, TEXTS, cfg, cache_dir=str(tmp_path), batch_size=4, progress=False)
    assert store.manifest()["complete"] and len(list(store.dir.glob("chunk_*.npz"))) == 4
    assert full["last_vectors"].shape == (4, lm.n_layers + 1, lm.d_model)

    calls = []
    real = run_module.analyse_batch
    monkeypatch.setattr(run_module, "analyse_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
    again, _ = run_analysis(lm, TEXTS, cfg, cache_dir=str(tmp_path), batch_size=2, progress=False)
    assert calls == []  # same configuration (batch size does not count): nothing recomputed
    # a run killed after two chunks: the other chunks are recomputed, the finished ones reused
    store.chunk_path(1).unlink()
    store.chunk_path(3).unlink()
    resumed, _ = run_analysis(lm, TEXTS, cfg, cache_dir=str(tmp_path), batch_size=1, progress=False)
    assert len(calls) > 0
    for key in full:
        np.testing.assert_allclose(resumed[key], full[key], rtol=1e-5, atol=1e-6, err_msg=key)
    shards = [run_analysis(lm, TEXTS, cfg, cache_dir=str(tmp_path), shard=f"{i}/3", progress=False)[0]
              for i in range(3)]
    merged = merge_records(shards)
    for key in full:
        np.testing.assert_allclose(merged[key], full[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spec": "no-such-model-xyz"}, "cannot load model"),
        ({"spec": "./missing/dir"}, "does not exist"),
        ({"spec": "/tmp/none.gguf"}, "does not exist"),
        ({"spec": "smollm2-135m", "dtype": "float64"}, "dtype"),
        ({"spec": "smollm2-135m", "device": "cuda:0"}, "no CUDA GPU"),
        ({"spec": "smollm2-135m", "device": "gpu"}, "not a torch device"),
    ],
)
def test_bad_model_input_is_one_line_error(kwargs, match):
    with pytest.raises(CompendiumError, match=match) as exc:
        load_model(**kwargs)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("kind", ["bert", "t5"])
def test_not_a_causal_lm(tmp_path, kind):
    from transformers import BertConfig, T5Config

    cfg = BertConfig(hidden_size=32, num_hidden_layers=1) if kind == "bert" else T5Config(d_model=32, num_layers=1)
    cfg.save_pretrained(tmp_path)
    with pytest.raises(CompendiumError, match="not a decoder-only causal LM"):
        load_model(str(tmp_path))


def test_missing_weights_is_one_line_error(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(CompendiumError, match="cannot load the weights"):
        load_model(str(tmp_path))


def test_bad_parameters(tmp_path):
    lm = tiny_with_tok()
    with pytest.raises(CompendiumError, match="no texts"):
        run_analysis(lm, [], AnalysisConfig(), cache_dir=str(tmp_path))
    with pytest.raises(CompendiumError, match="min_position"):
        run_analysis(lm, TEXTS, AnalysisConfig(max_tokens=4, min_position=4), cache_dir=str(tmp_path))
    with pytest.raises(CompendiumError, match="shard"):
        run_analysis(lm, TEXTS, AnalysisConfig(), cache_dir=str(tmp_path), shard="3/2")
    with pytest.raises(CompendiumError, match="batch_size"):
        run_analysis(lm, TEXTS, AnalysisConfig(), cache_dir=str(tmp_path), batch_size=0, progress=False)


def test_one_profile_registry_serves_every_experiment():
    from helpers import CompendiumError
    from helpers.config import PROFILE_NAMES, get_profile

    assert PROFILE_NAMES == ("smoke", "default", "paper")
    for name in PROFILE_NAMES:
        prof = get_profile(name)
        assert prof.name == name and prof.corpus.n_boot > 0 and prof.eigen.n_samples > 0
        assert prof.synthetic.train.epochs > 0 and prof.measure.n_inner > 0
    assert get_profile("paper").corpus.n_texts("1bw") is None
    for bad in ("defualt", None, 3):
        with pytest.raises(CompendiumError, match="unknown profile"):
            get_profile(bad)




def test_readings_are_rendered_from_the_numbers():
    """Notebook readings state what the tables hold: change the numbers and the text changes with them."""
    import pandas as pd

    from helpers.experiments import inner_loss as reports

    def curves(inner, logit):
        rows = [{"lens": lens, "layer": i, "mean": v, "std": 0.1, "n_tokens": 50, "share_kept": 0.2, "share_passing": 0.2,
                 "dataset": "1bw", "filter": reports.PAPER_FILTER}
                for lens, vals in (("inner_loss", inner), ("logit_lens", logit)) for i, v in enumerate(vals)]
        return pd.DataFrame(rows)

    falling = curves([5.0, 3.0, 4.0, 1.0], [6.0, 2.0, 5.0, 1.0])
    summary = reports.inner_loss_summary(falling)
    assert summary.loc[0, "largest rise"] == "1->2 (+1.00)"
    text = reports.reading_inner_loss(summary, falling, "m")
    assert "falls from 5.00 at layer 0 to 1.00 at layer 3" in text and "67% of layer steps go down" in text
    assert "below the inner loss on 1 of 4 layers" in text
    rising = curves([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0])
    text = reports.reading_inner_loss(reports.inner_loss_summary(rising), rising, "m")
    assert "does not fall from 1.00" in text and "0% of layer steps go down" in text


