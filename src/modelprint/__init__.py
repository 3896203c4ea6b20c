"""modelprint: is this suspect model mine, or derived from mine?"""

__version__ = "0.1.0"

from .access import BlackBox, Model, WhiteBox, as_model  # noqa: E402
from .errors import ModelprintError  # noqa: E402
from .fingerprint import (  # noqa: E402
    Fingerprint,
    calibrate,
    compare_weights,
    extract,
    make_scheme,
    score,
    verify,
    verify_combined,
)
from .io import load_model, save_model  # noqa: E402
from .nets import make_net  # noqa: E402
from .remote import RemoteModel  # noqa: E402
from .verdict import Verdict  # noqa: E402

__all__ = [
    "BlackBox",
    "Fingerprint",
    "Model",
    "ModelprintError",
    "RemoteModel",
    "Verdict",
    "WhiteBox",
    "__version__",
    "as_model",
    "calibrate",
    "compare_weights",
    "extract",
    "load_model",
    "make_net",
    "make_scheme",
    "save_model",
    "score",
    "verify",
    "verify_combined",
]
