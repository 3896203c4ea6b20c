"""Integrity: is the served model exactly the released one (``seal`` / ``check``: sensitive-sample seals), and
does a model hide a backdoor (``scan`` with a named detector, calibrated on clean models; ``diff`` against a
trusted model it derives from)?"""

from .backdoor import DETECTORS, Detector, diff, measure, scan, scores
from .seal import FORMAT, TOLERANCE, VERSION, Seal, check, seal

__all__ = [
    "DETECTORS", "FORMAT", "TOLERANCE", "VERSION", "Detector", "Seal", "check", "diff", "measure", "scan", "scores",
    "seal",
]  # fmt: skip
