"""One door for every kind of evidence an owner keeps: black-box fingerprints, weights fingerprints, watermark
keys, diffusion watermark keys and integrity seals.

``load`` reads any evidence file (its header names the kind), and ``calibrate`` and ``verify`` take any kind and
call that kind's own function, so the command line's ``calibrate`` and ``verify`` and the registry accept every
kind. Infrastructure options (``cache_dir``, ``device``, ``progress``) reach the kinds that take them; an option
a kind does not take (``sequential`` for a watermark key, ``trials`` for a fingerprint) is refused by name.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from . import container
from .errors import ConfigError, FileFormatError
from .verdict import Verdict

FORMATS = {
    "modelprint-fingerprint": "fingerprint",
    "modelprint-weights-fingerprint": "weights fingerprint",
    "modelprint-watermark-key": "watermark key",
    "modelprint-diffusion-watermark-key": "diffusion watermark key",
    "modelprint-integrity-seal": "integrity seal",
    "modelprint-embedding-fingerprint": "embedding fingerprint",
}
INFRASTRUCTURE = ("cache_dir", "device", "progress")


def load(path: str | Path):
    """The evidence in ``path``, of whichever kind its header says; ``FileFormatError`` names the file."""
    header, _ = container.peek(path, "evidence")
    kind = FORMATS.get(header.get("format"))
    if kind in ("fingerprint", "weights fingerprint"):
        from .fingerprint import Fingerprint

        return Fingerprint.load(path)
    if kind == "watermark key":
        from .watermark import Key

        return Key.load(path)
    if kind == "diffusion watermark key":
        from .diffusion.aiao import DiffusionKey

        return DiffusionKey.load(path)
    if kind == "integrity seal":
        from .integrity import Seal

        return Seal.load(path)
    if kind == "embedding fingerprint":
        from .transformer.embedding import EmbeddingFingerprint

        return EmbeddingFingerprint.load(path)
    raise FileFormatError(
        f"{path}: not a modelprint evidence file (format {header.get('format')!r}; known: {', '.join(FORMATS)})"
    )


def kind(evidence) -> str:
    """What ``evidence`` is, in words (one of ``FORMATS``' values)."""
    name = type(evidence).__name__
    kinds = {"Fingerprint": "fingerprint", "WeightsFingerprint": "weights fingerprint", "Key": "watermark key",
             "DiffusionKey": "diffusion watermark key", "Seal": "integrity seal",
             "EmbeddingFingerprint": "embedding fingerprint"}  # fmt: skip
    if name not in kinds:
        raise ConfigError(f"not a kind of evidence: {name} (fingerprints and watermark keys are)")
    return kinds[name]


# each kind's own calibrate and verify, imported only when a kind is used (diffusion pulls in diffusers)
CALIBRATE = {"fingerprint": "fingerprint:calibrate", "weights fingerprint": "fingerprint:calibrate",
             "watermark key": "watermark:calibrate", "diffusion watermark key": "diffusion.aiao:calibrate",
             "embedding fingerprint": "transformer.embedding:calibrate"}  # fmt: skip
VERIFY = {"fingerprint": "fingerprint:verify", "weights fingerprint": "fingerprint:verify",
          "watermark key": "watermark:verify", "diffusion watermark key": "diffusion.aiao:verify",
          "integrity seal": "integrity:check", "embedding fingerprint": "transformer.embedding:verify"}  # fmt: skip


def calibrate(evidence, null_models, target_fpr: float | None = None, **options):
    """``evidence`` scored against independent (clean) models, which fixes its threshold; returns the evidence."""
    if kind(evidence) == "integrity seal":
        raise ConfigError("an integrity seal needs no calibration: its check is exact, within its tolerance")
    fpr = {} if target_fpr is None else {"target_fpr": target_fpr}
    return _call(CALIBRATE[kind(evidence)], evidence, null_models, {**fpr, **options})


def verify(evidence, suspect, **options) -> Verdict:
    """Is ``suspect`` related to (derived from, or marked by) the owner of ``evidence``?"""
    return _call(VERIFY[kind(evidence)], evidence, suspect, options)


def verify_combined(evidences, suspect, method: str = "holm", alpha: float | None = None, **options) -> Verdict:
    """One verdict on ``suspect`` from several pieces of evidence of the same owner: each verified, then their
    p-values combined by ``method`` (see ``combination.combine``), decided at ``alpha`` (default: the first's)."""
    from .combination import check_method, combine_verdicts

    check_method(method)
    if not evidences:
        raise ConfigError("a combined verdict needs at least one piece of evidence")
    at = {} if alpha is None else {"alpha": alpha}
    parts = [verify(ev, suspect, **at, **options) for ev in evidences]
    return combine_verdicts(parts, method, parts[0].alpha if alpha is None else alpha)


def _call(target: str, evidence, arg, options: dict[str, Any]):
    import importlib

    module, _, name = target.partition(":")
    fn = getattr(importlib.import_module(f".{module}", __package__), name)
    takes = inspect.signature(fn).parameters
    refused = sorted(k for k in options if k not in takes and k not in INFRASTRUCTURE)
    if refused:
        what = kind(evidence)
        raise ConfigError(f"{', '.join(refused)}: not an option of {'an' if what[0] in 'aeiou' else 'a'} {what}")
    return fn(evidence, arg, **{k: v for k, v in options.items() if k in takes})
