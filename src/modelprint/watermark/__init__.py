"""Watermarks for classifiers: ``embed`` plants a secret key in a model before release, ``verify`` checks a
suspect for it (hard labels only) and returns the project's ``Verdict``. Keys are self-describing,
checksummed files like fingerprints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import container
from ..access import Model, WhiteBox, architecture
from ..decide import Null, check_alpha, decide, decide_binomial, describe_null, rate_null
from ..digest import module_digest
from ..errors import ConfigError, FileFormatError
from ..lineage.train import fit
from ..nets import clone
from ..verdict import Verdict
from .schemes import WATERMARKS, Watermark

__all__ = ["WATERMARKS", "Key", "RecipientKey", "Watermark", "calibrate", "distribute", "embed", "make_watermark",
           "trace", "verify"]  # fmt: skip

FORMAT, VERSION = "modelprint-watermark-key", 1
_FIELDS = {
    "format": str,
    "format_version": int,
    "scheme": str,
    "dataset": str,
    "key_seed": int,
    "num_classes": int,
    "owner_sha256": (str, type(None)),
    **container.CALIBRATION_FIELDS,
}
_OPTIONAL = {**container.CALIBRATION_OPTIONAL, "owner_arch": ((str, type(None)), None)}
LEARNT = 0.95  # the match rate at which embedding stops: the key is learnt


def make_watermark(spec: str | Watermark) -> Watermark:
    """A watermark scheme by spec: ``"trigger-set"``, ``"noise(size=50)"``."""
    if isinstance(spec, Watermark):
        return spec
    return WATERMARKS.from_spec(spec)


@dataclass(frozen=True, eq=False)
class Key(container.Calibrated):
    """The owner's secret: the key inputs, the labels the watermarked model gives them, and the null."""

    scheme: Watermark
    inputs: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    dataset: str
    key_seed: int
    owner_sha256: str | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    null_scores: np.ndarray | None = None
    null_models: tuple[str, ...] = ()
    target_fpr: float = 0.01
    null_strata: tuple[str, ...] = ()
    owner_arch: str | None = None

    def __repr__(self) -> str:  # not the tensors: a key prints as what it is
        return (
            f"Key({self.scheme.spec()}, {len(self.inputs)} inputs on {self.dataset}, "
            f"{describe_null(self.null_scores, self.target_fpr)})"
        )

    @property
    def chance(self) -> float | None:
        """The exact per-input chance of an unrelated model matching (random targets), when the scheme has one."""
        return self.scheme.chance(self.num_classes)

    @cached_property
    def null(self) -> Null | None:
        """The null from clean models' match rates (beta-binomial over the key's inputs, by architecture)."""
        if self.null_scores is None:
            return None
        return rate_null(self.null_scores, len(self.labels), self.null_strata)

    def match_rate(self, suspect: Model) -> float:
        """The fraction of the key the suspect answers as the marked model does."""
        return float((self.scheme.read(suspect, self.inputs) == self.labels).float().mean())

    def save(self, path: str | Path) -> Path:
        header = {
            "format": FORMAT,
            "format_version": VERSION,
            "scheme": self.scheme.spec(),
            "dataset": self.dataset,
            "key_seed": self.key_seed,
            "num_classes": self.num_classes,
            "owner_sha256": self.owner_sha256,
            "owner_arch": self.owner_arch,
            **self.calibration_header(),
        }
        tensors = {"inputs": self.inputs, "labels": self.labels, **self.calibration_tensors()}
        return container.write(path, header, tensors)

    @classmethod
    def load(cls, path: str | Path) -> Key:
        header, tensors = container.peek(path, "watermark key")
        header = container.check(path, header, tensors, FORMAT, VERSION, _FIELDS, "watermark key", _OPTIONAL)
        x, y = tensors.get("inputs"), tensors.get("labels")
        if x is None or y is None or len(x) != len(y) or y.dtype != torch.int64 or not x.is_floating_point():
            raise FileFormatError(f"{path}: watermark key lacks consistent inputs and labels")
        try:
            scheme = make_watermark(header["scheme"])
        except ConfigError as e:
            raise FileFormatError(f"{path}: unknown watermark scheme in header ({e})") from None
        return cls(
            scheme,
            x,
            y,
            header["num_classes"],
            header["dataset"],
            header["key_seed"],
            header["owner_sha256"],
            owner_arch=header["owner_arch"],
            **cls.calibration_fields(header, tensors),
        )


def embed(
    model: nn.Module,
    scheme: str | Watermark = "trigger-set",
    data="digits",
    key_seed: int = 0,
    *,
    epochs: int = 20,
    lr: float = 0.002,
    learnt: float = LEARNT,
    rounds: int = 10,
    device: str = "cpu",
) -> tuple[nn.Module, Key]:
    """A watermarked copy of ``model`` and its key: the model is fine-tuned on its training data (``data``: a
    registered dataset's train split, a Dataset or (x, y) tensors) with the key's inputs mixed in (or, for a
    white-box scheme, its regulariser added, twice as strong in every round after the first), in up to ``rounds``
    runs of ``epochs`` until the marked model matches at least ``learnt`` of the key."""
    model = model.module if isinstance(model, WhiteBox) else model
    if not isinstance(model, nn.Module):
        raise ConfigError(f"embedding a watermark trains the model: needs a torch module, not {type(model).__name__}")
    scheme = make_watermark(scheme).for_model(model)
    from ..fingerprint.helpers import training_set

    x, y, name = training_set(data)
    num_classes = WhiteBox(model, input_shape=tuple(x.shape[1:]), device=device).num_classes
    gen = torch.Generator().manual_seed(key_seed)
    key_x, key_y = scheme.make_key(model, x, y, num_classes, gen)
    key_x, key_y = key_x.float(), key_y.long()
    marked = clone(model)
    key = Key(scheme, key_x, key_y, num_classes, name, key_seed, owner_arch=architecture(model))
    if scheme.white_box:  # trained in through a regulariser on the weights
        args = x, y
    else:  # mixed into the data: the key makes about a tenth of every epoch
        boost = max(1, round(0.1 * len(x) / len(key_x)))
        args = torch.cat([x, key_x.to(x.dtype).repeat(boost, *[1] * (x.ndim - 1))]), torch.cat([y, key_y.repeat(boost)])
    for round_ in range(rounds):  # until the key is learnt (a small network memorises random labels slowly)
        kw = {}
        if scheme.white_box:  # a regulariser the task's loss outweighs is doubled in every further round
            kw["penalty"] = lambda m, k=2.0**round_: k * scheme.penalty(m, key_x, key_y)
        fit(marked, *args, epochs=epochs, lr=lr, seed=key_seed + round_, device=device, **kw)
        if key.match_rate(WhiteBox(marked, input_shape=tuple(x.shape[1:]), device=device)) >= learnt:
            break
    marked.eval()
    return marked, replace(key, owner_sha256=module_digest(marked))


def _suspect(suspect, key: Key, cache_dir, device: str) -> Model:
    """A suspect (module, ``Model``, labels callable, model file or lineage expression) as a ``Model``."""
    from ..lineage import resolve_model

    # a white-box key's inputs are a projection of the weights, not inputs of the model
    shape = None if key.scheme.white_box else tuple(key.inputs.shape[1:])
    return resolve_model(suspect, shape, key.num_classes, cache_dir, device)


def calibrate(
    key: Key,
    null_models: Sequence | str,
    target_fpr: float = 0.01,
    cache_dir=None,
    device="cpu",
    *,
    data=None,
    progress=None,
) -> Key:
    """``key`` with the match rates of models known to be clean, each kept with its architecture (schemes with
    random targets have an exact null and need none). ``null_models="auto"`` trains the null bank on the key's
    dataset (or ``data``): enough clean models for a distribution-free p-value at ``target_fpr``."""
    check_alpha(target_fpr)
    if isinstance(null_models, str) and null_models == "auto":
        from .. import nullbank

        bank = nullbank.build(
            key.dataset if data is None else data, target_fpr, key.owner_arch,
            cache_dir=cache_dir, device=device, progress=progress,
        )  # fmt: skip
        models, names = [b.module for b in bank], tuple(b.name for b in bank)
    else:
        models = list(null_models)
        names = tuple(str(m) if isinstance(m, str | Path) else type(m).__name__ for m in models)
    suspects = [_suspect(m, key, cache_dir, device) for m in models]
    for s, name in zip(suspects, names, strict=True):
        if isinstance(s, WhiteBox) and key.owner_sha256 and module_digest(s.module) == key.owner_sha256:
            raise ConfigError(f"clean model {name} is the marked model itself: a null model must be clean")
    scores = [key.match_rate(s) for s in suspects]
    if len(scores) < 2:
        raise ConfigError("calibrating a watermark key needs at least 2 clean models")
    strata = tuple(architecture(s) or "" for s in suspects)
    return key.calibrated(scores, names, target_fpr, strata)


def verify(key: Key, suspect, *, alpha: float | None = None, cache_dir=None, device: str = "cpu") -> Verdict:
    """Does ``suspect`` carry the watermark? Black-box schemes send the key inputs once and read hard labels
    only; Uchida's reads the suspect's weights. Keys with random targets are tested against their exact binomial
    null; the others against clean models' match rates."""
    alpha = key.target_fpr if alpha is None else alpha
    check_alpha(alpha)
    if key.chance is None and key.null is None:
        raise ConfigError(f"watermark {key.scheme.spec()} has no analytic null: run calibrate(key, [clean models])")
    model = _suspect(suspect, key, cache_dir, device)
    before = model.queries
    rate = key.match_rate(model)
    scheme, queries = f"watermark:{key.scheme.spec()}", model.queries - before
    if key.chance is not None:
        return decide_binomial(rate, len(key.labels), key.chance, alpha, queries=queries, scheme=scheme)
    return decide(
        rate, key.null, alpha, queries=queries, scheme=scheme, stratum=architecture(model), owner_stratum=key.owner_arch
    )


from .recipients import RecipientKey, distribute, trace  # noqa: E402  (it embeds through this module's embed)
