"""Dataset registry: ``load(name, split)`` for bundled, derived and local datasets (see ``names()``)."""

from . import builtin, derived, local  # noqa: F401  (registration)
from .core import SPLITS, LabeledDataset, Source, digest, load, names, source, stratified_splits

__all__ = ["SPLITS", "LabeledDataset", "Source", "digest", "load", "names", "source", "stratified_splits"]
