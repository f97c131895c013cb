"""Notebook 05's figure captions lay out as the two-line provenance subtitle every figure carries."""

from __future__ import annotations

from helpers.report.output import subtitle_lines
from helpers.surrogates.report import Provenance

MODELS = {"smollm2-135m": "SmolLM2-135M-Instruct (llama, 30 layers); Q4_1 GGUF dequantised to float: an "
                          "approximation of the released weights",
          "natural": "GPT-2 arch., trained on natural text (4 layers, d=128, default profile)",
          "untrained": "GPT-2 arch., untrained (4 layers, d=128, random init seed 0); randomly initialised control "
                       "(same config as the trained natural-text model)"}


def test_figure_captions_fit_two_lines_with_data_and_profile():
    prov = Provenance(MODELS, ("wikitext-103", "1bw"), 5, 32, "default")
    for caption in (prov.figure, prov.per_model("smollm2-135m"), prov.first_text("untrained")):
        lines = subtitle_lines(caption)
        text = " ".join(lines)
        assert len(lines) <= 2 and "<br>" not in text
        assert "profile default" in text and "<= 32 tokens" in text and "wikitext-103" in text
    assert all(m.split(";")[0] in " ".join(subtitle_lines(prov.figure)) for m in MODELS.values())
