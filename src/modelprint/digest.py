"""Content digests of local files, for checksums in model files and for cache keys."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import torch


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@lru_cache(maxsize=256)
def _sha256_unchanged(path: str, size: int, mtime_ns: int) -> str:
    """sha256 memoised by (path, size, mtime): a file is hashed once per change, not once per build."""
    return sha256_file(path)


def path_digest(path: str | Path) -> str:
    """sha256 of a file, or of the names, sizes and times of a folder's files (cheap for image folders);
    empty for a path that does not exist (loading it fails later with a clear error)."""
    p = Path(path)
    if p.is_file():
        st = os.stat(p)
        return _sha256_unchanged(str(p.resolve()), st.st_size, st.st_mtime_ns)
    h = hashlib.sha256()
    for f in sorted(p.rglob("*")) if p.is_dir() else []:
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(p)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def tensors_digest(header: str, tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over a text header and named tensors (names, dtypes, shapes, bytes): a file's content checksum."""
    h = hashlib.sha256(header.encode())
    for name, t in sorted(tensors.items()):
        t = t.detach().cpu().contiguous()
        h.update(f"\n{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def module_digest(module: torch.nn.Module) -> str:
    """sha256 of a torch module's parameters and buffers."""
    return tensors_digest("", module.state_dict())
