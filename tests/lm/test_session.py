"""The model session (:mod:`helpers.lm.session`): a GGUF model is dequantised once per session; every later load
reads the kept float copy and gives the same model, bit for bit, under the same fingerprint."""

from __future__ import annotations

import os

import pytest
import torch

from helpers.commands import load_counts
from helpers.lm.load import LOAD_LOG_ENV, load_model
from helpers.lm.session import SESSION_ENV, weights_session


@pytest.mark.slow
def test_second_load_in_a_session_rereads_the_same_weights(tmp_path, monkeypatch):
    log = tmp_path / "loads.log"
    monkeypatch.setenv(LOAD_LOG_ENV, str(log))
    monkeypatch.delenv(SESSION_ENV, raising=False)
    with weights_session(tmp_path / "session") as folder:
        first = load_model("smollm2-135m")
        kept = [p for p in folder.iterdir() if not p.name.startswith(".")]
        assert len(kept) == 1 and (kept[0] / "model.safetensors").is_file()
        second = load_model("smollm2-135m")
        assert os.environ[SESSION_ENV] == str(folder)
    assert not folder.exists() and SESSION_ENV not in os.environ  # a completed session leaves nothing behind
    counted = load_counts(log)
    assert counted[["loads", "rereads"]].values.tolist() == [[1, 1]]
    assert first.fingerprint == second.fingerprint and first.n_layers == second.n_layers
    a, b = first.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert first.model.lm_head.weight.data_ptr() == first.model.model.embed_tokens.weight.data_ptr()
    assert second.model.lm_head.weight.data_ptr() == second.model.model.embed_tokens.weight.data_ptr()  # tied
    ids = torch.tensor([first.encode(["The session keeps the weights."], 16)[0]])
    with torch.inference_mode():
        assert torch.equal(first.model(ids).logits, second.model(ids).logits)


@pytest.mark.slow
def test_outside_a_session_nothing_is_kept_and_a_failed_session_keeps_its_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(LOAD_LOG_ENV, str(tmp_path / "loads.log"))
    monkeypatch.delenv(SESSION_ENV, raising=False)
    load_model("smollm2-135m")
    assert load_counts(tmp_path / "loads.log")[["loads", "rereads"]].values.tolist() == [[1, 0]]
    with pytest.raises(KeyboardInterrupt), weights_session(tmp_path / "s") as folder:
        load_model("smollm2-135m")
        raise KeyboardInterrupt  # a killed run: the copy stays, so the rerun resumes without dequantising
    assert any(folder.iterdir()) and SESSION_ENV not in os.environ
    with weights_session(folder):
        load_model("smollm2-135m")
    assert load_counts(tmp_path / "loads.log")[["loads", "rereads"]].values.tolist() == [[2, 1]]


def test_load_counts_reads_old_and_new_log_lines(tmp_path):
    log = tmp_path / "loads.log"
    log.write_text("m\t2.0\nm\t0.5\treread\nm\t3.0\tload\nn\t1.0\n")
    counted = load_counts(log).set_index("model")
    assert counted.loc["m", ["loads", "rereads"]].tolist() == [2, 1]
    assert counted.loc["m", ["load_seconds", "reread_seconds"]].tolist() == [5.0, 0.5]
    assert counted.loc["n", ["loads", "rereads"]].tolist() == [1, 0]
