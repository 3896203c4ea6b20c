"""One door for every kind of evidence an owner keeps: black-box fingerprints, weights fingerprints, watermark
keys, diffusion watermark keys and integrity seals.

``load`` reads any evidence file (its header names the kind), and ``calibrate`` and ``verify`` take any kind and
call that kind's own function, so the command line's ``calibrate`` and ``verify`` and the registry accept every
kind. Infrastructure options (``cache_dir``, ``device``, ``progress``) reach the kinds that take them; an option
a kind does not take (``sequential`` for a watermark key, ``trials`` for a fingerprint) is refused by name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
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
    raise FileFormatError(
        f"{path}: not a modelprint evidence file (format {header.get('format')!r}; known: {', '.join(FORMATS)})"
    )


def kind(evidence) -> str:
    """What ``evidence`` is, in words (one of ``FORMATS``' values)."""
    name = type(evidence).__name__
    kinds = {"Fingerprint": "fingerprint", "WeightsFingerprint": "weights fingerprint", "Key": "watermark key",
             "DiffusionKey": "diffusion watermark key", "Seal": "integrity seal"}  # fmt: skip
    if name not in kinds:
        raise ConfigError(f"not a kind of evidence: {name} (fingerprints and watermark keys are)")
    return kinds[name]


def calibrate(evidence, null_models, target_fpr: float | None = None, **options):
    """``evidence`` scored against independent (clean) models, which fixes its threshold; returns the evidence."""
    from .diffusion import aiao
    from .fingerprint import calibrate as calibrate_fingerprint
    from .watermark import calibrate as calibrate_key

    if kind(evidence) == "integrity seal":
        raise ConfigError("an integrity seal needs no calibration: its check is exact, within its tolerance")
    fn = {"watermark key": calibrate_key, "diffusion watermark key": aiao.calibrate}.get(kind(evidence))
    fpr = {} if target_fpr is None else {"target_fpr": target_fpr}
    return _call(fn or calibrate_fingerprint, evidence, null_models, {**fpr, **options})


def verify(evidence, suspect, **options) -> Verdict:
    """Is ``suspect`` related to (derived from, or marked by) the owner of ``evidence``?"""
    from . import integrity
    from .diffusion import aiao
    from .fingerprint import verify as verify_fingerprint
    from .watermark import verify as verify_key

    fn = {"watermark key": verify_key, "diffusion watermark key": aiao.verify, "integrity seal": integrity.check}
    fn = fn.get(kind(evidence))
    return _call(fn or verify_fingerprint, evidence, suspect, options)


def _call(fn: Callable, evidence, arg, options: dict[str, Any]):
    takes = inspect.signature(fn).parameters
    refused = sorted(k for k in options if k not in takes and k not in INFRASTRUCTURE)
    if refused:
        what = kind(evidence)
        raise ConfigError(f"{', '.join(refused)}: not an option of {'an' if what[0] in 'aeiou' else 'a'} {what}")
    return fn(evidence, arg, **{k: v for k, v in options.items() if k in takes})
