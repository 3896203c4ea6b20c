"""modelprint: is this suspect model mine, or derived from mine?"""

__version__ = "0.1.0"

# every name is imported on first use, so that ``import modelprint`` (and the command line's --help) stays light
_NAMES = {
    "BlackBox": "access", "Model": "access", "WhiteBox": "access", "as_model": "access",
    "ModelprintError": "errors", "Verdict": "verdict", "RemoteModel": "remote", "make_net": "nets",
    "load_model": "io", "save_model": "io",
    **dict.fromkeys(("Fingerprint", "calibrate", "compare_weights", "extract", "make_scheme", "score", "verify",
                     "verify_combined"), "fingerprint"),
}  # fmt: skip
_SUBMODULES = ("bench", "commitment", "data", "decide", "diffusion", "evidence", "integrity", "lineage", "locking",
               "nullbank", "pol", "registry", "watermark")  # fmt: skip


def __getattr__(name: str):
    import importlib

    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'modelprint' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES, *_SUBMODULES])


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
