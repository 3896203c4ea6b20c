"""Integrity: is the served model exactly the released one (``seal`` / ``check``: sensitive-sample seals), and
does a model hide a backdoor (``scan`` with a named detector, calibrated on clean models; ``diff`` against a
trusted model it derives from), and do inputs carry its trigger (``strip``)?"""

from .backdoor import DETECTORS, Detector, diff, measure, scan, scores
from .seal import FLOOR, FORMAT, TOLERANCE, VERSION, Seal, check, seal
from .strip import Screening, Strip, strip

__all__ = [
    "DETECTORS", "FLOOR", "FORMAT", "TOLERANCE", "VERSION", "Detector", "Screening", "Seal", "Strip", "check", "diff",
    "measure", "scan", "scores", "seal", "strip",
]  # fmt: skip
