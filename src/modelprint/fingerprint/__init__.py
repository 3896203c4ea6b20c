"""Functional fingerprints: query samplers x representations x distances (QuRD's decomposition), the named
schemes of the literature, the fingerprint file, and the extract / calibrate / verify workflow."""

from . import crafted, deepfool, learned, tafa  # noqa: F401  (register the samplers that optimise their queries)
from .api import calibrate, extract, score, verify, verify_combined
from .connectivity import compare_barrier, loss_path
from .deepjudge import compare_layers
from .distances import DISTANCES, Distance
from .file import Fingerprint
from .gradfield import compare_gradients
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
    "compare_barrier",
    "compare_gradients",
    "compare_layers",
    "compare_weights",
    "extract",
    "loss_path",
    "make_scheme",
    "score",
    "verify",
    "verify_combined",
]
