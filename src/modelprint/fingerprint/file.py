"""The fingerprint file: one safetensors file holding the queries, the owner's responses and the null scores,
with a JSON header (format, scheme, owner digest, data, budget, seed, calibration) and a checksum over all of it
(``modelprint.container``).
Loading validates everything and names the file and the problem in one line."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .. import container
from ..decide import Null, Scale, describe_null
from ..errors import ConfigError, FileFormatError
from .schemes import Scheme, make_scheme

if TYPE_CHECKING:
    from .weights import WeightsFingerprint

FORMAT, FORMAT_VERSION = "modelprint-fingerprint", 1
WEIGHTS_FORMAT = "modelprint-weights-fingerprint"
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "format_version": int,
    "scheme": str,
    "components": str,
    "budget": int,
    "seed": int,
    "dataset": str,
    "num_classes": int,
    "input_shape": list,
    "unit": int,
    "owner_sha256": (str, type(None)),
    **container.CALIBRATION_FIELDS,
}
_OPTIONAL = {**container.CALIBRATION_OPTIONAL, "owner_arch": ((str, type(None)), None)}


@dataclass(frozen=True, eq=False)  # identity equality: comparing tensors field by field has no single answer
class Fingerprint(container.Calibrated):
    """What an owner keeps to verify suspects later: the scheme, its queries (``budget`` inputs, read in units of
    ``unit``), the owner's responses, and, once calibrated, the scores of known-unrelated models."""

    scheme: Scheme
    queries: torch.Tensor
    responses: torch.Tensor
    num_classes: int
    budget: int
    seed: int
    dataset: str
    unit: int = 1
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    owner_sha256: str | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    null_scores: np.ndarray | None = None
    null_models: tuple[str, ...] = ()
    target_fpr: float = 0.05
    null_strata: tuple[str, ...] = ()  # the architecture of each null model ("" when unknown)
    owner_arch: str | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.queries.shape[1:])

    @cached_property
    def scale(self) -> Scale:
        """The range of this fingerprint's score: agreements over the representation's entries, or a similarity."""
        name = self.scheme.distance.scale
        return Scale(name, self.owner_representation.numel() if name == "rate" else 0)

    @cached_property
    def self_score(self) -> float:
        """The owner's own score: what a copy gets."""
        return self.similarity(self.responses)

    @cached_property
    def null(self) -> Null | None:
        return None if self.null_scores is None else Null(self.null_scores, self.null_strata, self.scale)

    def __repr__(self) -> str:  # not the tensors: a fingerprint prints as what it is
        return (
            f"Fingerprint({self.scheme.label}, {self.budget} queries on {self.dataset}, owner "
            f"{self.owner_arch or 'unknown'}, {describe_null(self.null_scores, self.target_fpr)})"
        )

    @cached_property
    def owner_representation(self) -> torch.Tensor:
        return self.scheme.represent(self.responses, self.aux, self.num_classes)

    def similarity(self, suspect_outputs: torch.Tensor) -> float:
        """How similar a suspect's outputs on all the queries are to the owner's (higher = more related)."""
        suspect = self.scheme.represent(suspect_outputs, self.aux, self.num_classes)
        return self.scheme.compare(self.owner_representation, suspect)

    def header(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "scheme": self.scheme.label,
            "components": self.scheme.components,
            "budget": self.budget,
            "seed": self.seed,
            "dataset": self.dataset,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "unit": self.unit,
            "owner_sha256": self.owner_sha256,
            "owner_arch": self.owner_arch,
            **self.calibration_header(),
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"queries": self.queries, "responses": self.responses, **{f"aux.{k}": v for k, v in self.aux.items()}}
        out |= self.calibration_tensors()
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def save(self, path: str | Path) -> Path:
        """Write the fingerprint atomically (a reader sees the old file or the new one, never half of one)."""
        return container.write(path, self.header(), self.tensors())

    @classmethod
    def load(cls, path: str | Path) -> Fingerprint | WeightsFingerprint:
        """Read and validate a fingerprint file (black-box, or a weights fingerprint); any problem raises
        ``FileFormatError`` naming the file."""
        header, tensors = container.peek(path, "fingerprint")
        if header.get("format") == WEIGHTS_FORMAT:
            from .weights import WeightsFingerprint

            return WeightsFingerprint.from_parts(path, header, tensors)
        header = container.check(path, header, tensors, FORMAT, FORMAT_VERSION, _FIELDS, "fingerprint", _OPTIONAL)
        return _from_parts(Path(path), header, tensors)

    def describe(self) -> str:
        return (
            f"{self.scheme.label} ({self.scheme.components}), {self.budget} queries on {self.dataset}, "
            f"needs {self.scheme.needs}"
        )


def _from_parts(path: Path, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Fingerprint:
    def bad(why: str) -> FileFormatError:
        return FileFormatError(f"{path}: {why}")

    try:
        scheme = make_scheme(header["components"])
    except ConfigError as e:
        raise bad(f"unknown scheme in header ({e})") from None
    scheme.name = header["scheme"] if header["scheme"] != scheme.components else ""
    budget, shape, c = header["budget"], tuple(header["input_shape"]), header["num_classes"]
    q, r = tensors.get("queries"), tensors.get("responses")
    if q is None or r is None:
        raise bad("fingerprint lacks its queries or responses")
    if tuple(q.shape) != (budget, *shape) or not q.is_floating_point():
        raise bad(f"queries of shape {tuple(q.shape)} and dtype {q.dtype} do not match budget {budget}, input {shape}")
    hard = scheme.needs == "labels"
    if (hard and (r.shape != (budget,) or r.dtype != torch.int64)) or (
        not hard and (r.shape != (budget, c) or not r.is_floating_point())
    ):
        raise bad(f"responses of shape {tuple(r.shape)} and dtype {r.dtype} do not match scheme {scheme.label}")
    if header["unit"] < 1 or budget % header["unit"]:
        raise bad(f"query unit {header['unit']} does not divide the budget {budget}")
    calibration = Fingerprint.calibration_fields(header, tensors)
    nulls, strata = calibration["null_scores"], calibration["null_strata"]
    if nulls is not None and strata and len(strata) != len(nulls):
        raise bad(f"{len(strata)} null strata for {len(nulls)} null scores")
    return Fingerprint(
        scheme=scheme,
        queries=q,
        responses=r,
        num_classes=c,
        budget=budget,
        seed=header["seed"],
        dataset=header["dataset"],
        unit=header["unit"],
        aux={k[4:]: v for k, v in tensors.items() if k.startswith("aux.")},
        owner_sha256=header["owner_sha256"],
        owner_arch=header["owner_arch"],
        **calibration,
    )
