"""Lesson 07's look inside MiniLM: the padded batch the model is given, and its real
attention probabilities."""

import pytest
import torch

from transferkit.text.attention import AttentionMaps, attention_maps, token_rows
from transferkit.text.model import load_text_model

TEXT = "A three-hour cinema master class."


@pytest.fixture(scope="module")
def minilm():
    return load_text_model(device="cpu")


def test_token_rows_show_special_tokens_padding_and_the_mask(minilm):
    rows = token_rows(minilm.tokenizer, ["A gem.", "Two hours I will not get back."])
    assert len(rows) == 10  # the longer text: 8 pieces + [CLS] + [SEP]
    assert rows.tokens[0] == ["[CLS]", "a", "gem", ".", "[SEP]"] + ["[PAD]"] * 5
    assert rows.mask[0] == [1] * 5 + [0] * 5 and rows.mask[1] == [1] * 10
    assert rows.ids[0][:5] == [101, 1037, 17070, 1012, 102]
    assert rows.ids[0][5:] == [minilm.tokenizer.pad_token_id] * 5
    assert rows.tokens[1][-1] == "[SEP]"
    assert rows.rows[5] == {"position": 5, "tokens": ["[PAD]", "not"], "ids": [0, 2025],
                            "mask": [0, 1]}
    text = str(rows)
    assert "text 1: 'A gem.'" in text and "[PAD]" in text and "text 2: mask" in text
    html = rows._repr_html_()
    assert html.count("<tr>") == 11 and "[SEP]" in html  # a header and 10 positions


def test_token_rows_take_a_text_model_and_cut_at_max_length(minilm):
    rows = token_rows(minilm, [TEXT, "ok"], max_length=5)
    assert rows.tokens[0] == ["[CLS]", "a", "three", "-", "[SEP]"]  # [SEP] stays last
    assert rows.mask[1] == [1, 1, 1, 0, 0]
    with pytest.raises(TypeError, match="wrap it"):
        token_rows(minilm, "one string")
    with pytest.raises(ValueError, match="max_length must be"):
        token_rows(minilm, ["a", "b"], max_length=1)


def test_attention_maps_are_the_models_own_probabilities(minilm):
    model, tokenizer = minilm
    maps = attention_maps(minilm, TEXT)
    n = len(maps.tokens)
    assert isinstance(maps, AttentionMaps) and n == 10
    assert maps.weights.shape == (6, 12, n, n) and maps.weights.dtype == torch.float32
    assert maps.tokens[0] == "[CLS]" and maps.tokens[-1] == "[SEP]"
    assert torch.allclose(maps.weights.sum(-1), torch.ones(6, 12, n), atol=1e-5)
    assert (maps.weights >= 0).all()
    # The same numbers as the model's eager attention, computed here by hand for layer 1.
    batch = tokenizer([TEXT], return_tensors="pt")
    with torch.no_grad():
        hidden = model.embeddings(input_ids=batch["input_ids"])
        attn = model.encoder.layer[0].attention.self
        q = attn.query(hidden).view(1, n, 12, 32).transpose(1, 2)
        k = attn.key(hidden).view(1, n, 12, 32).transpose(1, 2)
        expected = torch.softmax(q @ k.transpose(2, 3) / 32 ** 0.5, dim=-1)[0]
    assert torch.allclose(maps.weights[0], expected, atol=1e-5)
    token, share = maps.most_attended(0, 0)
    assert share == pytest.approx(float(maps.weights[0, 0, 0].max()))
    assert token == maps.tokens[int(maps.weights[0, 0, 0].argmax())]


def test_attention_maps_leave_the_model_as_it_was(minilm):
    model = minilm.model
    assert model.config._attn_implementation == "sdpa"
    model.train()
    try:
        attention_maps(minilm, TEXT)
        assert model.training and model.encoder.layer[0].attention.self.training
        assert model.config._attn_implementation == "sdpa"
    finally:
        model.eval()
    assert not model.training


def test_attention_maps_restore_the_implementation_after_an_error(minilm, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(minilm.model, "forward", broken)
    with pytest.raises(RuntimeError, match="boom"):
        attention_maps(minilm, TEXT)
    assert minilm.model.config._attn_implementation == "sdpa"


def test_attention_maps_errors_name_the_fix(minilm):
    maps = attention_maps(minilm, "A gem.")
    with pytest.raises(IndexError, match="layer must be an integer from 0 to 5"):
        maps.head(6, 0)
    with pytest.raises(IndexError, match="head must be an integer from 0 to 11"):
        maps.head(0, 12)
    with pytest.raises(TypeError, match="one text"):
        attention_maps(minilm, ["A gem.", "Dull."])
    with pytest.raises(TypeError, match="not a Hugging Face transformer"):
        attention_maps((torch.nn.Linear(2, 2), minilm.tokenizer), "A gem.")
