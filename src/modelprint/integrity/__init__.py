"""Integrity: is the served model exactly the released one (``seal`` / ``check``: sensitive-sample seals), and
does a model hide a backdoor (``scan`` with a named detector, calibrated on clean models; ``diff`` against a
trusted model it derives from; from gradients, or from labels alone), do inputs carry its trigger (``strip``), and
which examples of its training set were poisoned (``sift``)?"""

from .backdoor import DETECTORS, Detector, diff, measure, scan, scores
from .decision import LabelSearch
from .seal import FLOOR, FORMAT, TOLERANCE, VERSION, Seal, check, seal
from .sift import SIFTERS, Sifter, Sifting, sift
from .strip import Screening, Strip, strip

__all__ = [
    "DETECTORS", "FLOOR", "FORMAT", "SIFTERS", "TOLERANCE", "VERSION", "Detector", "LabelSearch", "Screening", "Seal",
    "Sifter", "Sifting", "Strip", "check", "diff", "measure", "scan", "scores", "seal", "sift", "strip",
]  # fmt: skip
