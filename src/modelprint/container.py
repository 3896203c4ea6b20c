"""Self-describing tensor files (fingerprints, weight fingerprints, watermark keys): one safetensors file with
a JSON header (its format, version and fields) and a sha256 over the header and every tensor. Written
atomically; reading validates all of it and names the file and the problem in one line."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .digest import tensors_digest
from .errors import FileFormatError

# What every calibrated kind of evidence records about its null, in its header (the scores are a tensor).
CALIBRATION_FIELDS = {"created": str, "target_fpr": float, "null_models": list, "modelprint_version": str}
CALIBRATION_OPTIONAL = {"null_strata": (list, [])}


class Calibrated:
    """The calibration a kind of evidence carries (a dataclass with ``created``, ``null_scores``,
    ``null_models``, ``target_fpr`` and ``null_strata`` fields), written and read the same way by every kind."""

    def calibrated(self, scores, models, target_fpr: float, strata=()):
        """This evidence with the scores of independent models (and their names and architectures)."""
        import numpy as np

        return replace(
            self,  # type: ignore[type-var]
            null_scores=np.asarray(scores, np.float64),
            null_models=tuple(models),
            target_fpr=float(target_fpr),
            null_strata=tuple(strata) or ("",) * len(scores),
        )

    def calibration_header(self) -> dict[str, Any]:
        from . import __version__

        return {
            "created": self.created, "target_fpr": self.target_fpr, "null_models": list(self.null_models),
            "null_strata": list(self.null_strata), "modelprint_version": __version__,
        }  # fmt: skip

    def calibration_tensors(self) -> dict[str, torch.Tensor]:
        scores = self.null_scores
        return {} if scores is None else {"null_scores": torch.as_tensor(scores, dtype=torch.float64)}

    @staticmethod
    def calibration_fields(header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The dataclass fields of a calibration read back from a checked header and its tensors."""
        nulls = tensors.get("null_scores")
        return {
            "created": header["created"], "null_scores": None if nulls is None else nulls.numpy(),
            "null_models": tuple(header["null_models"]), "target_fpr": float(header["target_fpr"]),
            "null_strata": tuple(str(s) for s in header["null_strata"]),
        }  # fmt: skip


def canonical(header: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in header.items() if k != "checksum"}, sort_keys=True)


def write(path: str | Path, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``tensors`` with ``header`` plus its checksum; a reader sees the old file or the new one."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {**header, "checksum": tensors_digest(canonical(header), tensors)}
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


def peek(path: str | Path, what: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The header and tensors of a file, not yet checked against a format."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path}: no such {what} file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise FileFormatError(f"{path}: not a readable safetensors file ({first})") from None
    if "modelprint" not in meta:
        raise FileFormatError(f"{path}: not a modelprint {what} (no modelprint header)")
    try:
        header = json.loads(meta["modelprint"])
    except json.JSONDecodeError as e:
        raise FileFormatError(f"{path}: {what} header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise FileFormatError(f"{path}: not a modelprint {what} (header is not a mapping)")
    return header, tensors


def check(
    path: str | Path, header: dict, tensors: dict, fmt: str, version: int, fields: dict, what: str, optional=None
) -> dict:
    """Validate format, version, field types and checksum; return the header without its checksum. ``optional``
    fields (name -> (type, default)) were added after the format's version was fixed: typed when present."""

    def bad(why: str) -> FileFormatError:
        return FileFormatError(f"{path}: {why}")

    if header.get("format") != fmt:
        raise bad(f"not a modelprint {what} (format {header.get('format')!r})")
    if header.get("format_version") != version:
        raise bad(
            f"{what} format version {header.get('format_version')!r} is not supported "
            f"(this modelprint reads version {version})"
        )
    for name, typ in {**fields, "checksum": str}.items():
        if name not in header:
            raise bad(f"{what} header lacks {name!r}")
        value = header[name]
        wrong = not isinstance(value, typ) or (typ is int and isinstance(value, bool))
        if wrong and not (typ is float and isinstance(value, int) and not isinstance(value, bool)):
            raise bad(f"{what} header field {name!r} has the wrong type ({type(value).__name__})")
    for name, (typ, _) in (optional or {}).items():
        if name in header and not isinstance(header[name], typ):
            raise bad(f"{what} header field {name!r} has the wrong type ({type(header[name]).__name__})")
    header = dict(header)
    claimed = header.pop("checksum")
    if tensors_digest(canonical(header), tensors) != claimed:
        raise bad(f"checksum mismatch: the {what} was modified or damaged after it was written")
    return {**{k: d for k, (_, d) in (optional or {}).items()}, **header}
