"""Transformers: provenance for text encoders (a real pretrained one, MiniLM, offline) and for modelprint's own
small transformers (``vit``, ``seqformer``), white-box and black-box.

- ``text``: ``load_encoder("minilm")``, encoder folders, the offline text corpus;
- ``view``: one reading of any supported transformer's weights and activations;
- ``symmetry``: ``permute`` (heads, MLP units, residual stream) and ``rotate`` (heads' subspaces, the stream with
  norms folded), which keep the function and defeat naive weight comparisons;
- ``derive``: fine-tuning (full, LoRA merged), pruning of heads and units, int8, distillation, independent encoders;
- ``compare``: the white-box tests ``units``, ``invariants`` and ``hidden-cka`` with calibrated verdicts;
- ``embedding``: black-box fingerprints from embeddings or rankings; ``serving``: encoders over KServe V2.
"""

from .symmetry import permute, rotate
from .text import SentenceEncoder, corpus, load_encoder, save_encoder
from .view import is_transformer, view
from .whitebox import SCORES, compare, similarity

__all__ = [
    "SCORES",
    "SentenceEncoder",
    "compare",
    "corpus",
    "is_transformer",
    "load_encoder",
    "permute",
    "rotate",
    "save_encoder",
    "similarity",
    "view",
]
