"""The trainer: learning toward the oracle, determinism, resuming, the GPT-2 BPE, natural-text data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import SMOKE

from helpers import CompendiumError
from helpers.config import ModelConfig, TrainConfig
from helpers.corpus import sources
from helpers.corpus.natural import (
    NATURAL_FILES,
    gpt2_bpe_tokenizer,
    natural_files,
    natural_windows,
    pack_windows,
)
from helpers.corpus.synthetic import SyntheticConfig, make_dataset, oracle_loss
from helpers.paths import file_sha256
from helpers.train.checkpoints import list_checkpoints
from helpers.train.loop import build_model, evaluate_loss, lr_at, train_lm
from helpers.train.recipes import natural_model_dir, train_natural

pytestmark = pytest.mark.usefixtures("one_thread")


DATA = SyntheticConfig(n_tasks=2, vocab_size=6, alpha=0.2, seq_len=24, min_segment=6, max_segment=12,
                       n_train=384, n_val=64)
MODEL = ModelConfig(vocab_size=6, n_positions=25, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def data():
    return make_dataset(DATA)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_lr_schedule():
    cfg = TrainConfig(lr=1.0, warmup_frac=0.1, min_lr_frac=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10], strict=False))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lr_at(100, 100, cfg) == pytest.approx(0.1)


def test_build_model_is_seeded():
    assert _same_weights(build_model(MODEL, seed=3), build_model(MODEL, seed=3))
    assert not _same_weights(build_model(MODEL, seed=3), build_model(MODEL, seed=4))


def test_training_lowers_loss_toward_oracle(data, tmp_path):
    oracle = oracle_loss(data.transitions, data.val)
    run = train_lm(MODEL, TrainConfig(epochs=3, batch_size=32, lr=3e-3), data.train.tokens, data.val.tokens,
                   tmp_path, progress=False)
    h = run.history
    assert list(h["epoch"]) == [0, 1, 2, 3] and len(run.checkpoints) == 4
    start, end = h["val_loss"].iloc[0], h["val_loss"].iloc[-1]
    assert start > np.log(6) - 0.2  # an untrained model is close to uniform
    assert end < start - 0.3
    assert end - oracle < 0.6 * (start - oracle)  # well on the way to the floor
    assert end > oracle - 0.05  # no model beats the oracle on average


def test_resume_gives_the_same_weights(data, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=64, lr=3e-3)
    full = train_lm(MODEL, cfg, data.train.tokens, data.val.tokens, tmp_path / "a", progress=False)
    part = train_lm(MODEL, cfg, data.train.tokens, data.val.tokens, tmp_path / "b", progress=False, stop_after=1)
    assert [p.name for p in part.checkpoints] == ["epoch_000", "epoch_001"]
    # a half-written checkpoint (no state.json) and a temp folder are ignored / cleaned
    (tmp_path / "b" / "epoch_002").mkdir()
    (tmp_path / "b" / ".epoch_002.tmp123").mkdir()
    resumed = train_lm(MODEL, cfg, data.train.tokens, data.val.tokens, tmp_path / "b", progress=False)
    assert resumed.trained_epochs_now == 1
    assert not list((tmp_path / "b").glob(".epoch_*"))
    from transformers import GPT2LMHeadModel

    a = GPT2LMHeadModel.from_pretrained(full.final)
    b = GPT2LMHeadModel.from_pretrained(resumed.final)
    assert _same_weights(a, b)
    np.testing.assert_allclose(full.history["val_loss"], resumed.history["val_loss"], rtol=0, atol=0)
    # only the latest checkpoint keeps its optimizer state
    assert [p.name for p in list_checkpoints(tmp_path / "b") if (p / "optimizer.pt").exists()] == ["epoch_002"]
    # a finished run is reused, not retrained
    again = train_lm(MODEL, cfg, data.train.tokens, data.val.tokens, tmp_path / "b", progress=False)
    assert again.trained_epochs_now == 0 and len(again.checkpoints) == 3


def test_evaluate_loss_of_a_uniform_model():
    model = build_model(MODEL, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    windows = np.random.default_rng(0).integers(6, size=(10, 25))
    assert evaluate_loss(model, windows, batch_size=3) == pytest.approx(np.log(6), abs=1e-5)


def test_train_rejects_bad_windows(tmp_path):
    with pytest.raises(CompendiumError):
        train_lm(MODEL, TrainConfig(epochs=1), np.zeros((4, 40), int), np.zeros((2, 40), int), tmp_path,
                 progress=False)


# ---------------------------------------------------------------- natural text


def test_gpt2_bpe_full_and_truncated():
    full = gpt2_bpe_tokenizer(None)
    assert len(full) == 50257 and full.eos_token_id == 50256
    text = "The quick brown fox"
    assert full(text)["input_ids"] == [464, 2068, 7586, 21831]  # GPT-2's own ids
    small = gpt2_bpe_tokenizer(1000)
    assert len(small) == 1000 and small.eos_token_id == 999
    ids = small(text + " jumps over the lazy dog.")["input_ids"]
    assert max(ids) < 999 and small.decode(ids) == text + " jumps over the lazy dog."
    assert small("The")["input_ids"] == [464]  # kept tokens keep their GPT-2 id
    with pytest.raises(CompendiumError):
        gpt2_bpe_tokenizer(100)


def test_pack_windows():
    w = pack_windows([[1, 2, 3], [4, 5]], eot=0, seq_len=3)  # the stream 1 2 3 0 4 5 0: one full window
    np.testing.assert_array_equal(w, [[1, 2, 3, 0]])
    w = pack_windows([[1, 2, 3], [4, 5, 6, 7]], eot=0, seq_len=3)
    np.testing.assert_array_equal(w, [[1, 2, 3, 0], [4, 5, 6, 7]])


def test_missing_data_dir_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("METALEARN_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(CompendiumError, match="nowhere") as exc:
        natural_files()
    assert "\n" not in str(exc.value)
    with pytest.raises(CompendiumError, match="1bw/news.en.heldout-00010"):
        natural_files(tmp_path)


def _fake_corpus(folder, monkeypatch, n_lines=60):
    """Fake natural-text files under ``folder``, registered in the checksum table for this test."""
    rng = np.random.default_rng(0)
    words = "the cat sat on a mat while news of the market rose and fell in the city".split()
    for name in NATURAL_FILES:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [" ".join(rng.choice(words, size=12)) for _ in range(n_lines)]
        path.write_text("\n".join(lines) + "\n \n")
        monkeypatch.setitem(sources.CHECKSUMS, name, file_sha256(path))
    return folder


def test_natural_windows_split_lines(tmp_path, monkeypatch):
    folder = _fake_corpus(tmp_path / "data", monkeypatch)
    tok = gpt2_bpe_tokenizer(1024)
    data = {"vocab_size": 1024, "seq_len": 16, "max_lines_per_file": 40, "val_fraction": 0.2,
            "max_train_windows": None, "max_val_windows": None, "split_seed": 0}
    train, val = natural_windows(data, tok, folder, cache_dir=tmp_path / "cache")
    assert train.shape[1] == val.shape[1] == 17 and len(train) > 4 * len(val) > 0
    assert train.max() < 1024 and (train == tok.eos_token_id).any()
    again = natural_windows(data, tok, tmp_path / "elsewhere", cache_dir=tmp_path / "cache")  # from the cache
    np.testing.assert_array_equal(again[0], train)


def test_train_natural_smoke_saves_a_loadable_model(tmp_path, monkeypatch):
    from helpers.lm.load import load_model

    folder = _fake_corpus(tmp_path / "data", monkeypatch, n_lines=120)
    cache = tmp_path / "cache"
    assert natural_model_dir(cache, SMOKE) is None
    run, val = train_natural(SMOKE, cache_dir=cache, data_dir=folder, progress=False)
    final = natural_model_dir(cache, SMOKE)
    assert final == run.extra["final_dir"] and final.is_dir()
    assert run.history["val_loss"].iloc[-1] < run.history["val_loss"].iloc[0]
    info = json.loads((final / "training.json").read_text())
    assert info["note"].endswith("not GPT-2")
    lm = load_model(str(final))
    assert lm.family == "gpt2" and lm.n_layers == 2
    ids = lm.encode(["the cat sat on the mat"], max_tokens=16)[0]
    assert ids == gpt2_bpe_tokenizer(1024)("the cat sat on the mat")["input_ids"]
