"""Integrity: is the served model exactly the released one (``seal`` / ``check``: sensitive-sample seals), and
does a model hide a backdoor (``scan`` with a named detector, calibrated on clean models)?"""

from .backdoor import DETECTORS, Detector, measure, scan, scores
from .seal import FORMAT, TOLERANCE, VERSION, Seal, check, seal

__all__ = [
    "DETECTORS",
    "FORMAT",
    "TOLERANCE",
    "VERSION",
    "Detector",
    "Seal",
    "check",
    "measure",
    "scan",
    "scores",
    "seal",
]
