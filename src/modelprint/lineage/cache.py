"""Content-addressed on-disk cache of built models, keyed by the normalised lineage expression (plus a digest
of any local files it reads).

Entries are model folders written atomically (a killed build never leaves a half entry) and built under a
per-key file lock, so several processes can share one cache without building the same model twice."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from filelock import FileLock
from torch import nn

from ..errors import ModelFileError
from ..io import load_model, read_config, save_model

# Bump when a training recipe changes: old entries then stop matching instead of being silently reused.
CACHE_VERSION = "2"


def default_cache_dir() -> Path:
    return Path(os.environ.get("MODELPRINT_CACHE", Path.home() / ".cache" / "modelprint" / "zoo"))


class ZooCache:
    """Models by cache key (see ``lineage.cache_keys``) under ``root/<hash[:2]>/<hash>/``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _hash(self, key: str) -> str:
        return hashlib.sha256(f"modelprint-zoo/{CACHE_VERSION}/{key}".encode()).hexdigest()[:32]

    def path(self, key: str) -> Path:
        k = self._hash(key)
        return self.root / k[:2] / k

    def lock(self, key: str) -> FileLock:
        lock_dir = self.root / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(lock_dir / f"{self._hash(key)}.lock"))

    def get(self, key: str, device: str = "cpu") -> tuple[nn.Module, dict] | None:
        """The cached model and its metadata, or None when absent or unreadable (it is then rebuilt)."""
        path = self.path(key)
        if not (path / "config.json").is_file():
            return None
        try:
            meta = read_config(path)["meta"]
            if meta.get("cache_key") != key:
                return None
            return load_model(path, device=device), meta
        except ModelFileError:
            return None

    def put(self, key: str, module: nn.Module, meta: dict) -> Path:
        return save_model(module, self.path(key), meta={**meta, "cache_key": key})
