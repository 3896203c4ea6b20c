"""Black-box fingerprints of a text encoder, from its answers alone.

The queries are probe sentences. What is kept of the owner's answers must not depend on the basis of the embedding
space, since a thief can rotate it (or permute it) without changing what the model does:

- ``embeddings`` access (an embedding API): the cosine similarity of every pair of queries; a suspect is scored by
  the Pearson correlation of its pairwise similarities with the owner's (representational similarity analysis,
  Kriegeskorte et al. 2008), invariant to any rotation and scaling of the suspect's space.
- ``ranks`` access (a rerank or search API that only orders candidates): each query's ``k`` nearest other queries,
  best first; a suspect is scored by the mean overlap of its top-``k`` lists with the owner's.

Calibrated on independent encoders like any other evidence (``calibrate``, then ``verify`` returns the project's
``Verdict``); the file is a checksummed container. The suspect is a ``SentenceEncoder``, an encoder folder, or a
``RemoteEncoder`` (``modelprint.transformer.serving``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from .. import container
from ..decide import Null, Scale, decide
from ..errors import ConfigError
from .text import corpus

FORMAT, VERSION = "modelprint-embedding-fingerprint", 1
ACCESS = ("embeddings", "ranks")
_FIELDS = {"format": str, "format_version": int, "access": str, "queries": list, "k": int, "owner": str,
           **container.CALIBRATION_FIELDS}  # fmt: skip


def _encoder(suspect):
    """An encoder given as a module, a ``RemoteEncoder``, ``"minilm"`` or an encoder folder."""
    if isinstance(suspect, str | Path):
        from .text import load_encoder

        return load_encoder(suspect)
    if not (hasattr(suspect, "encode") or hasattr(suspect, "rank")):
        raise ConfigError(f"{type(suspect).__name__} is not a text encoder (one with encode or rank)")
    return suspect


@dataclass(frozen=True, eq=False)
class EmbeddingFingerprint(container.Calibrated):
    access: str
    queries: tuple[str, ...]
    reference: np.ndarray  # embeddings: the owner's pairwise similarities; ranks: its top-k lists (n, k)
    k: int = 10
    owner: str = ""
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    null_scores: np.ndarray | None = None
    null_models: tuple[str, ...] = ()
    target_fpr: float = 0.01
    null_strata: tuple[str, ...] = ()
    label = "embedding fingerprint"

    @property
    def scale(self) -> Scale:
        return Scale("correlation") if self.access == "embeddings" else Scale("unit")

    @cached_property
    def null(self) -> Null | None:
        return None if self.null_scores is None else Null(self.null_scores, self.null_strata, self.scale)

    def cost(self) -> int:
        """Probe sentences a verification asks about (a ranking also sends them as candidates)."""
        return len(self.queries)

    def answers(self, suspect) -> np.ndarray:
        """What ``suspect`` says about the queries, in the form the reference keeps."""
        suspect, texts = _encoder(suspect), list(self.queries)
        if self.access == "embeddings":
            e = torch.nn.functional.normalize(suspect.encode(texts).double(), dim=1)
            sims = (e @ e.T).numpy()
            return sims[np.triu_indices(len(texts), 1)]
        from .serving import rank

        ranked = suspect.rank(texts, texts, self.k + 1) if hasattr(suspect, "rank") else rank(suspect, texts, texts,
                                                                                              self.k + 1)  # fmt: skip
        ranked = np.asarray(ranked)
        return np.stack([[j for j in row if j != i][: self.k] for i, row in enumerate(ranked)])

    def similarity(self, answers: np.ndarray) -> float:
        if self.access == "embeddings":
            return float(np.corrcoef(self.reference, answers)[0, 1])
        return float(np.mean([len(set(a) & set(b)) / self.k for a, b in zip(self.reference, answers, strict=True)]))

    def score(self, suspect) -> float:
        return self.similarity(self.answers(suspect))

    def describe(self) -> str:
        top = f", top {self.k}" if self.access == "ranks" else ""
        return f"{self.access} of {len(self.queries)} probe sentences{top}"

    def save(self, path: str | Path) -> Path:
        header = {"format": FORMAT, "format_version": VERSION, "access": self.access, "queries": list(self.queries),
                  "k": self.k, "owner": self.owner, **self.calibration_header()}  # fmt: skip
        tensors = {"reference": torch.from_numpy(np.ascontiguousarray(self.reference)), **self.calibration_tensors()}
        return container.write(path, header, tensors)

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingFingerprint:
        from ..errors import FileFormatError

        header, tensors = container.peek(path, "embedding fingerprint")
        header = container.check(path, header, tensors, FORMAT, VERSION, _FIELDS, "embedding fingerprint",
                                 container.CALIBRATION_OPTIONAL)  # fmt: skip
        queries, access = header["queries"], header["access"]
        ref = tensors.get("reference")
        n = len(queries)
        good = access in ACCESS and n >= 4 and all(isinstance(q, str) and q for q in queries) and ref is not None
        if good:
            want = (n * (n - 1) // 2,) if access == "embeddings" else (n, header["k"])
            good = tuple(ref.shape) == want
        if not good:
            raise FileFormatError(f"{path}: the embedding fingerprint's queries, access and reference do not agree")
        return cls(access, tuple(queries), ref.numpy(), header["k"], header["owner"],
                   **cls.calibration_fields(header, tensors))  # fmt: skip


def extract(encoder, access: str = "embeddings", queries: int = 64, k: int = 10) -> EmbeddingFingerprint:
    """The owner's fingerprint: its answers to the first ``queries`` probe sentences, through ``access``."""
    if access not in ACCESS:
        raise ConfigError(f"access must be one of {', '.join(ACCESS)}, not {access!r}")
    texts = corpus("probe")
    if not 4 <= queries <= len(texts) or (access == "ranks" and not 1 <= k < queries - 1):
        raise ConfigError(f"need 4..{len(texts)} queries and, for ranks, 1 <= k < queries - 1")
    encoder = _encoder(encoder)
    blank = EmbeddingFingerprint(access, tuple(texts[:queries]), np.zeros(0), k, getattr(encoder, "name", ""))
    return EmbeddingFingerprint(access, blank.queries, blank.answers(encoder), k, blank.owner)


def calibrate(fp: EmbeddingFingerprint, null_models, target_fpr: float = 0.01) -> EmbeddingFingerprint:
    """``fp`` with the scores of independent encoders (modules, folders or remote encoders; at least 2)."""
    nulls = list(null_models)
    if len(nulls) < 2:
        raise ConfigError("calibrating an embedding fingerprint needs at least 2 independent encoders")
    scores = [fp.score(m) for m in nulls]
    names = [getattr(m, "name", "") or str(m) for m in nulls]
    return fp.calibrated(scores, names, target_fpr, ["encoder"] * len(nulls))


def verify(fp: EmbeddingFingerprint, suspect, alpha: float | None = None):
    """Is ``suspect`` (an encoder, an encoder folder, or a ``RemoteEncoder``) derived from the owner's?"""
    if fp.null is None:
        raise ConfigError("the embedding fingerprint is not calibrated: calibrate it on independent encoders first")
    score = fp.score(suspect)
    return decide(score, fp.null, fp.target_fpr if alpha is None else alpha, queries=fp.cost(),
                  scheme=f"embedding:{fp.access}", stratum="encoder", null_models=list(fp.null_models))  # fmt: skip
