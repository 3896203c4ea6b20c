"""Users' own data: ``npz:PATH`` arrays, ``folder:PATH`` class folders of images, and ``tensors:DIGEST``, tensors
a program passed in (named by their content, kept in this process's memory)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .core import SPLITS, Source, carve_attacker, register

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def _as_inputs(x: np.ndarray, where: str) -> np.ndarray:
    """float32 inputs: vectors (N, F) stay vectors (tabular data; modelprint's nets reshape them themselves),
    (N, H, W) images get one channel, (N, C, ...) is kept; uint8 -> [0, 1]."""
    if x.ndim < 2:
        raise DataError(f"{where}: inputs must have a sample axis and at least one feature axis, got {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{where}: inputs must be numeric, got dtype {x.dtype}")
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    x = x.astype(np.float32) / scale
    return x[:, None] if x.ndim == 3 else x


def _as_labels(y: np.ndarray, where: str) -> np.ndarray:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: labels must be a 1-D integer array, got {y.dtype} {y.shape}")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: labels must be non-negative, got {y.min()}")
    return y.astype(np.int64)


def _arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, refusing object arrays (they would need pickle)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with np.load(p, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError as e:
        raise DataError(f"{path}: not a plain-array .npz file ({e})") from None
    except Exception as e:  # zipfile/OSError on a corrupt file
        raise DataError(f"{path}: cannot read .npz file ({type(e).__name__}: {e})") from None


def read_inputs(path: str | Path) -> np.ndarray:
    """Unlabelled inputs from an ``.npz`` file: its array ``x``, or its only array (shaped like ``npz:`` data)."""
    arrays = _arrays(path)
    if "x" not in arrays and len(arrays) != 1:
        raise DataError(f"{path}: expected an array 'x' (or a single array), found {sorted(arrays)}")
    return _as_inputs(arrays.get("x", next(iter(arrays.values()))), str(path))


def read_examples(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Labelled examples from an ``.npz`` file: its arrays ``x`` and ``y``, all of them (no split)."""
    arrays = _arrays(path)
    if "x" not in arrays or "y" not in arrays:
        raise DataError(f"{path}: expected arrays 'x' and 'y', found {sorted(arrays)}")
    x, y = _as_inputs(arrays["x"], str(path)), _as_labels(arrays["y"], str(path))
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} inputs but {len(y)} labels")
    return x, y


@register("npz:")
def npz(path: str) -> Source:
    """Arrays ``x`` and ``y`` (optional ``split``: 0/1/2 or train/attacker/test per sample), or per-split
    ``x_train``/``y_train``, ``x_attacker``/``y_attacker``, ``x_test``/``y_test``."""
    arrays = _arrays(path)
    if "x" in arrays and "y" in arrays:
        x, y = _as_inputs(arrays["x"], path), _as_labels(arrays["y"], path)
        if len(x) != len(y):
            raise DataError(f"{path}: {len(x)} inputs but {len(y)} labels")
        splits = {}
        if "split" in arrays:
            s = arrays["split"]
            if len(s) != len(y):
                raise DataError(f"{path}: 'split' has {len(s)} entries for {len(y)} samples")
            for i, name in enumerate(SPLITS):
                splits[name] = np.flatnonzero((s == name) | (s == i) if s.dtype.kind in "iu" else s == name)
    elif all(f"x_{s}" in arrays and f"y_{s}" in arrays for s in ("train", "test")):
        parts = [s for s in SPLITS if f"x_{s}" in arrays]
        xs = [_as_inputs(arrays[f"x_{s}"], path) for s in parts]
        ys = [_as_labels(arrays[f"y_{s}"], path) for s in parts]
        if len({a.shape[1:] for a in xs}) != 1:
            raise DataError(f"{path}: splits have different input shapes {[a.shape[1:] for a in xs]}")
        x, y = np.concatenate(xs), np.concatenate(ys)
        bounds = np.cumsum([0] + [len(a) for a in ys])
        splits = {s: np.arange(bounds[i], bounds[i + 1]) for i, s in enumerate(parts)}
        if "attacker" not in splits:
            splits.update(carve_attacker(splits["train"], y))
    else:
        raise DataError(
            f"{path}: expected arrays 'x' and 'y' (or x_train/y_train/x_test/y_test), found {sorted(arrays)}"
        )
    return Source(x, y, int(y.max()) + 1 if len(y) else 0, splits)


def _read_image(path: Path, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None


def _class_folders(root: Path) -> dict[str, list[Path]]:
    classes = {
        d.name: sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.startswith(".")
    }
    return {k: v for k, v in classes.items() if v}


@register("folder:")
def folder(path: str) -> Source:
    """One sub-folder of images per class (sorted names = class indices); optional ``train``/``attacker``/
    ``test`` sub-folders each holding the class folders. Images must share one size; grey stays one channel."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{path}: no such folder")
    split_dirs = [s for s in SPLITS if (root / s).is_dir()]
    parts = (
        {s: _class_folders(root / s) for s in split_dirs} if "train" in split_dirs else {"all": _class_folders(root)}
    )
    class_names = sorted({c for p in parts.values() for c in p})
    if not class_names:
        raise DataError(f"{path}: no class sub-folders with images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    files = [(s, class_names.index(c), f) for s, p in parts.items() for c, fs in p.items() for f in fs]
    from PIL import Image

    with Image.open(files[0][2]) as first:
        mode = "L" if first.mode in ("1", "L", "I", "I;16", "F") else "RGB"
    images, labels, owners = [], [], []
    for s, label, f in files:
        img = _read_image(f, mode)
        if images and img.shape != images[0].shape:
            raise DataError(
                f"{f}: image size {img.shape[:2]} differs from {images[0].shape[:2]}; resize the folder first"
            )
        images.append(img)
        labels.append(label)
        owners.append(s)
    x = np.stack(images)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    y = np.asarray(labels, dtype=np.int64)
    owners_arr = np.asarray(owners)
    splits = {}
    if "all" not in parts:
        splits = {s: np.flatnonzero(owners_arr == s) for s in split_dirs}
        if "test" not in splits:
            raise DataError(f"{path}: has a train/ folder but no test/ folder")
        if "attacker" not in splits:
            splits.update(carve_attacker(splits["train"], y))
    return Source(x.astype(np.float32) / 255.0, y, len(class_names), splits)


_MEMORY: dict[str, Source] = {}


def remember(x: np.ndarray, y: np.ndarray, key: str) -> str:
    """Make in-memory inputs and labels the dataset ``tensors:KEY`` of this process (``key`` digests their
    content), with the usual train/attacker/test splits, so that helper models train on them like on any other
    registered dataset."""
    if key not in _MEMORY:
        _MEMORY[key] = Source(np.asarray(x, np.float32), _as_labels(np.asarray(y), "tensors"), int(y.max()) + 1)
    return f"tensors:{key}"


@register("tensors:")
def tensors(key: str) -> Source:
    if key not in _MEMORY:
        raise DataError(f"tensors:{key}: these tensors are not in this process: pass data=(x, y) again")
    return _MEMORY[key]
