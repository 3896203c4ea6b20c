"""The fingerprint file: one safetensors file holding the queries, the owner's responses and the null scores,
with a JSON header (format, scheme, owner digest, data, budget, seed, calibration) and a checksum over all of it.
Loading validates everything and names the file and the problem in one line."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .. import __version__
from ..decide import EmpiricalNull
from ..digest import tensors_digest
from ..errors import ConfigError, FileFormatError
from .schemes import Scheme, make_scheme

FORMAT, FORMAT_VERSION = "modelprint-fingerprint", 1
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
    "created": str,
    "target_fpr": float,
    "null_models": list,
    "modelprint_version": str,
    "checksum": str,
}


@dataclass(frozen=True, eq=False)  # identity equality: comparing tensors field by field has no single answer
class Fingerprint:
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

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.queries.shape[1:])

    @cached_property
    def null(self) -> EmpiricalNull | None:
        return None if self.null_scores is None else EmpiricalNull(self.null_scores)

    @cached_property
    def owner_representation(self) -> torch.Tensor:
        return self.scheme.represent(self.responses, self.aux, self.num_classes)

    def similarity(self, suspect_outputs: torch.Tensor) -> float:
        """How similar a suspect's outputs on all the queries are to the owner's (higher = more related)."""
        suspect = self.scheme.represent(suspect_outputs, self.aux, self.num_classes)
        return self.scheme.compare(self.owner_representation, suspect)

    def calibrated(self, scores: np.ndarray, models: tuple[str, ...], target_fpr: float) -> Fingerprint:
        return replace(
            self, null_scores=np.asarray(scores, np.float64), null_models=tuple(models), target_fpr=float(target_fpr)
        )

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
            "created": self.created,
            "target_fpr": self.target_fpr,
            "null_models": list(self.null_models),
            "modelprint_version": __version__,
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"queries": self.queries, "responses": self.responses, **{f"aux.{k}": v for k, v in self.aux.items()}}
        if self.null_scores is not None:
            out["null_scores"] = torch.from_numpy(np.asarray(self.null_scores, np.float64))
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def save(self, path: str | Path) -> Path:
        """Write the fingerprint atomically (a reader sees the old file or the new one, never half of one)."""
        path = Path(path)
        tensors = self.tensors()
        header = self.header()
        header["checksum"] = tensors_digest(_canonical(header), tensors)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"modelprint": json.dumps(header, sort_keys=True)})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Fingerprint:
        """Read and validate a fingerprint file; any problem raises ``FileFormatError`` naming the file."""
        path = Path(path)
        if not path.is_file():
            raise FileFormatError(f"{path}: no such fingerprint file")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        except Exception as e:
            raise FileFormatError(f"{path}: not a readable safetensors file ({_first_line(e)})") from None
        if "modelprint" not in meta:
            raise FileFormatError(f"{path}: not a modelprint fingerprint (no modelprint header)")
        try:
            header = json.loads(meta["modelprint"])
        except json.JSONDecodeError as e:
            raise FileFormatError(f"{path}: fingerprint header is not valid JSON ({e})") from None
        return _from_parts(path, header, tensors)


def _from_parts(path: Path, header: Any, tensors: dict[str, torch.Tensor]) -> Fingerprint:
    def bad(why: str) -> FileFormatError:
        return FileFormatError(f"{path}: {why}")

    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise bad(
            f"not a modelprint fingerprint (format {header.get('format') if isinstance(header, dict) else header!r})"
        )
    if header.get("format_version") != FORMAT_VERSION:
        raise bad(
            f"fingerprint format version {header.get('format_version')!r} is not supported "
            f"(this modelprint reads version {FORMAT_VERSION})"
        )
    for name, typ in _FIELDS.items():
        if name not in header:
            raise bad(f"fingerprint header lacks {name!r}")
        value = header[name]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            if not (typ is float and isinstance(value, int) and not isinstance(value, bool)):
                raise bad(f"fingerprint header field {name!r} has the wrong type ({type(value).__name__})")
    claimed = header.pop("checksum")
    if tensors_digest(_canonical(header), tensors) != claimed:
        raise bad("checksum mismatch: the fingerprint was modified or damaged after it was written")
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
    nulls = tensors.get("null_scores")
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
        created=header["created"],
        null_scores=None if nulls is None else nulls.numpy(),
        null_models=tuple(header["null_models"]),
        target_fpr=float(header["target_fpr"]),
    )


def _canonical(header: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in header.items() if k != "checksum"}, sort_keys=True)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
