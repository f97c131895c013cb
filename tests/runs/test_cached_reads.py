"""A notebook whose runs are cached loads no weights: the skeleton names the same runs and reads the same records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SMOKE

from helpers.lm.load import load_model
from helpers.lm.twin import untrained_twin
from helpers.runs import datasets


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A small randomly initialised GPT-2 saved with a GPT-2 BPE tokenizer, loadable by path."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from helpers.corpus.natural import gpt2_bpe_tokenizer

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_gpt2")
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=1024)).save_pretrained(out)
    gpt2_bpe_tokenizer(1024).save_pretrained(out)
    return out


def count_loads(monkeypatch, module) -> list[bool]:
    """Every ``module.load_model`` call from now on appends whether it loaded weights (False: a skeleton)."""
    loads: list[bool] = []
    real = module.load_model

    def logged(spec, *args, **kwargs):
        loads.append(kwargs.get("weights", True))
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(module, "load_model", logged)
    return loads


def test_skeleton_is_the_model_without_its_weights(tiny_dir):
    full, skel = load_model(str(tiny_dir)), load_model(str(tiny_dir), weights=False)
    assert skel.skeleton and not full.skeleton
    for attr in ("fingerprint", "n_layers", "d_model", "context", "dtype", "n_params", "label"):
        assert getattr(skel, attr) == getattr(full, attr), attr
    assert skel.describe() == full.describe()
    assert skel.encode(["a test sentence"], 16) == full.encode(["a test sentence"], 16)
    assert {p.device.type for p in skel.model.parameters()} == {"meta"}
    twin_of_skel, twin = untrained_twin(skel, device="meta"), untrained_twin(full)
    assert twin_of_skel.skeleton and not twin.skeleton
    assert twin_of_skel.fingerprint == twin.fingerprint and twin_of_skel.describe() == twin.describe()


def test_cached_runs_load_no_weights(tiny_dir, tmp_path, monkeypatch):
    """The first call computes (one load with weights); the second reads the same records from a skeleton, and
    the twin's cached runs come from a skeleton twin."""
    loads = count_loads(monkeypatch, datasets)
    opts = dict(n_texts=6, max_tokens=24, cache_dir=str(tmp_path / "cache"), progress=False)
    lm, runs = datasets.analyse_corpora(str(tiny_dir), ["1bw"], SMOKE, **opts)
    twin, twin_runs = datasets.analyse_twin(lm, runs, SMOKE, max_tokens=24, cache_dir=opts["cache_dir"],
                                            progress=False)
    assert loads == [False, True] and not lm.skeleton and not twin.skeleton  # nothing cached yet
    lm2, runs2 = datasets.analyse_corpora(str(tiny_dir), ["1bw"], SMOKE, **opts)
    twin2, twin_runs2 = datasets.analyse_twin(lm2, runs2, SMOKE, max_tokens=24, cache_dir=opts["cache_dir"],
                                              progress=False)
    assert loads == [False, True, False] and lm2.skeleton and twin2.skeleton
    for a, b in ((runs, runs2), (twin_runs, twin_runs2)):
        assert a["1bw"].caption() == b["1bw"].caption()
        for key, value in a["1bw"].records.items():
            np.testing.assert_array_equal(value, b["1bw"].records[key], err_msg=key)


def test_cross_model_entries_read_cached_runs_without_weights(tiny_dir, tmp_path, monkeypatch):
    """Notebook 08's entries: a cold pass loads the model and builds its twin; a second pass finds both entries'
    runs cached and loads no weights (the rows are the same)."""
    from helpers.experiments import cross_rows, zoo

    loads = count_loads(monkeypatch, zoo)

    def table() -> list[dict]:
        out = []
        for entry in zoo.model_entries(str(tiny_dir), SMOKE, cache_dir=str(tmp_path)):
            runs = cross_rows.analyse_entry(entry, ["1bw"], SMOKE, cache_dir=str(tmp_path), progress=False)
            out.append((entry.lm.skeleton, cross_rows.entry_row(entry, runs["1bw"], n_boot=20)))
        return out

    cold = table()
    assert loads == [False, True] and [s for s, _ in cold] == [False, False]
    warm = table()
    assert loads == [False, True, False] and [s for s, _ in warm] == [True, True]
    for (_, a), (_, b) in zip(cold, warm, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == b[key] or (a[key] != a[key] and b[key] != b[key]), key  # equal, or both NaN


@pytest.mark.parametrize("part", ["descent", "descent_slopes"])
def test_descent_runs_read_cached_records_without_weights(part, tiny_dir, tmp_path, monkeypatch):
    """Notebook 07 (both parts): the cold run loads the model once (its twin is built from the config); the warm
    run reads both record sets from skeletons and gives the same records."""
    import importlib

    from helpers.experiments import zoo

    module = importlib.import_module(f"helpers.experiments.{part}")
    prof = SMOKE.powered if part == "descent_slopes" else SMOKE.descent
    words = "the cat sat on a mat while the dog ran far away from home and back again".split()
    texts = {ds: [" ".join(words[(i + k) % len(words)] for k in range(40)) for i in range(6)]
             for ds in ("wikitext-103", "1bw")}
    loads = count_loads(monkeypatch, zoo)
    cold = module.run_models([str(tiny_dir)], texts, prof, SMOKE, cache_dir=str(tmp_path))
    assert loads == [False, True]
    warm = module.run_models([str(tiny_dir)], texts, prof, SMOKE, cache_dir=str(tmp_path))
    assert loads == [False, True, False]
    assert set(cold.records.weights) == {"trained", "untrained twin"}
    assert cold.captions == warm.captions
    a, b = cold.records.reset_index(drop=True), warm.records.reset_index(drop=True)
    assert list(a.columns) == list(b.columns)
    for col in a.columns:
        if a[col].dtype.kind == "f":  # the cache keeps 7 significant digits
            np.testing.assert_allclose(a[col], b[col], rtol=1e-5, atol=1e-7, err_msg=col)
        else:
            assert (a[col] == b[col]).all(), col


def test_geometry_entries_read_cached_runs_without_weights(tiny_dir, tmp_path, monkeypatch):
    """Notebook 09: the cold run loads the model once (twins from the config); the warm run loads no weights and
    gives the same geometry for the model and every twin."""
    from helpers.experiments import geometry, zoo

    loads = count_loads(monkeypatch, zoo)
    cold = geometry.run([str(tiny_dir)], SMOKE, cache_dir=str(tmp_path))
    assert loads == [False, True] and len(cold.entries) >= 3  # the model and its twins
    warm = geometry.run([str(tiny_dir)], SMOKE, cache_dir=str(tmp_path))
    assert loads == [False, True, False]
    for a, b in zip(cold.entries, warm.entries, strict=True):
        assert (a.role, a.label, a.describe) == (b.role, b.label, b.describe)
        for key, value in a.geo.items():
            np.testing.assert_array_equal(value, b.geo[key], err_msg=f"{a.role}: {key}")


def test_loads_of_weights_are_logged_and_counted(tiny_dir, tmp_path, monkeypatch):
    """``make reproduce`` counts loads from the log load_model writes: a load of weights is a line, a skeleton none."""
    from helpers.commands import load_counts
    from helpers.lm.load import LOAD_LOG_ENV

    log = tmp_path / "loads.log"
    monkeypatch.setenv(LOAD_LOG_ENV, str(log))
    load_model(str(tiny_dir))
    load_model(str(tiny_dir), weights=False)
    load_model(str(tiny_dir))
    counted = load_counts(log)
    assert counted.model.tolist() == [str(tiny_dir)] and counted.loads.tolist() == [2]
    assert (counted.load_seconds >= 0).all() and load_counts(tmp_path / "none.log").empty
    from helpers.paths import repo_root

    inside = tmp_path / "in.log"  # a model inside the repository is named by its relative path (no machine paths)
    inside.write_text(f"{repo_root() / 'results' / 'cache' / 'm'}\t1.0\n")
    assert load_counts(inside).model.tolist() == ["results/cache/m"]


def test_twin_curves_from_a_skeleton_build_the_twin_when_not_cached(tiny_dir, tmp_path):
    """Notebook 02's null from a model read as a skeleton: with notebook 08's twin run not cached the twin is built
    from the config (no weights of the model needed), and a second call reads the same curves."""
    from helpers.experiments import inner_loss

    skel = load_model(str(tiny_dir), weights=False)
    kw = dict(cache_dir=str(tmp_path), progress=False)
    first, sample = inner_loss.twin_curves(skel, ["1bw"], SMOKE, twin_seed=0, **kw)
    again, _ = inner_loss.twin_curves(load_model(str(tiny_dir), weights=False), ["1bw"], SMOKE, twin_seed=0, **kw)
    assert sample == "notebook 08's smoke sample" and first["mean"].notna().any()
    assert first.equals(again)
