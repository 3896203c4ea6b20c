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

# subpackages reachable as attributes (``mp.watermark.embed``), imported on first use so that ``import modelprint``
# stays light
_SUBMODULES = ("bench", "data", "decide", "diffusion", "lineage", "nullbank", "registry", "watermark")


def __getattr__(name: str):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'modelprint' has no attribute {name!r}")


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
