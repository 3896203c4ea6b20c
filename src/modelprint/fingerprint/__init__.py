"""Functional fingerprints: query samplers x representations x distances (QuRD's decomposition), the named
schemes of the literature, the fingerprint file, and the extract / calibrate / verify workflow."""

from . import crafted  # noqa: F401  (registers the samplers that optimise their queries)
from .api import calibrate, extract, score, verify, verify_combined
from .distances import DISTANCES, Distance
from .file import Fingerprint
from .queries import SAMPLERS, Context, Queries, Sampler
from .representations import REPRESENTATIONS, Representation
from .schemes import NAMED, Scheme, make_scheme
from .weights import compare_activations, compare_weights

__all__ = [
    "DISTANCES",
    "NAMED",
    "REPRESENTATIONS",
    "SAMPLERS",
    "Context",
    "Distance",
    "Fingerprint",
    "Queries",
    "Representation",
    "Sampler",
    "Scheme",
    "calibrate",
    "compare_activations",
    "compare_weights",
    "extract",
    "make_scheme",
    "score",
    "verify",
    "verify_combined",
]
