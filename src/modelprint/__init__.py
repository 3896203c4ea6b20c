"""modelprint: is this suspect model mine, or derived from mine?"""

__version__ = "0.1.0"

from .access import BlackBox, Model, WhiteBox, as_model  # noqa: E402
from .errors import ModelprintError  # noqa: E402
from .fingerprint import Fingerprint, calibrate, extract, make_scheme, score, verify, verify_combined  # noqa: E402
from .io import load_model, save_model  # noqa: E402
from .nets import make_net  # noqa: E402
from .verdict import Verdict  # noqa: E402

__all__ = [
    "BlackBox",
    "Fingerprint",
    "Model",
    "ModelprintError",
    "Verdict",
    "WhiteBox",
    "__version__",
    "as_model",
    "calibrate",
    "extract",
    "load_model",
    "make_net",
    "make_scheme",
    "save_model",
    "score",
    "verify",
    "verify_combined",
]
