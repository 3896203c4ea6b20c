"""White-box evidence from weights: ``compare_weights`` (matched weights, through permutations and rescalings),
``compare_activations`` (CKA, across architectures), and the weights fingerprint file that carries an owner's
checkpoint to later comparisons."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import container
from ..access import architecture
from ..decide import Null, Scale
from ..errors import ConfigError
from .cka import cka_matrix, cka_score
from .matching import input_shape_of, matching_agreement
from .signature import signature


def default_nulls(model: nn.Module, n: int = 6, cross_architecture: bool = False) -> list[str]:
    """Independent models on ``model``'s dataset as lineage expressions (seeds far from those users pick): of
    its own architecture, or 2 seeds of each of 4 architectures. Empty unless the lineage module built it."""
    lineage, cfg = getattr(model, "mp_lineage", None), getattr(model, "mp_config", None)
    if not lineage or not cfg:
        return []
    if cross_architecture:
        archs = [a for a in ("cnn", "lenet", "mlp", "resnet-tiny") for _ in range(2)]
        return [f"train({a},{lineage['dataset']},{3001 + i % 2})" for i, a in enumerate(archs)]
    return [f"train({cfg['arch']},{lineage['dataset']},{3001 + i})" for i in range(n)]


def score_nulls(nulls: list, null_score, scheme: str, cache_dir, device) -> tuple[list, tuple[str, ...]]:
    """``null_score`` of every null model (modules, files or lineage expressions, at least 2), and their strata."""
    from ..lineage import resolve

    if len(nulls) < 2:
        raise ConfigError(
            f"calibrating {scheme} needs at least 2 independent models: pass null_models=[...] "
            "(modules, files or lineage expressions)"
        )
    scores, strata = [], []
    for m in nulls:
        m = resolve(m, cache_dir=cache_dir, device=device)
        if not isinstance(m, nn.Module):
            raise ConfigError(f"null models for {scheme} must be torch modules")
        scores.append(null_score(m))
        strata.append(architecture(m) or "")
    return scores, tuple(strata)


def _calibrated(
    score: float,
    evidence: dict,
    nulls: list,
    null_score,
    alpha: float,
    scheme: str,
    cache_dir,
    device,
    stratum: str | None = None,
    owner_stratum: str | None = None,
    scale: Scale | None = None,  # default: a correlation (matching agreements, CKA >= 0, gradient fields)
):
    from ..decide import decide

    scores, strata = score_nulls(nulls, null_score, scheme, cache_dir, device)
    return decide(
        score,
        Null(np.array(scores), strata, scale or Scale("correlation")),
        alpha,
        queries=0,
        scheme=scheme,
        stratum=stratum,
        owner_stratum=owner_stratum,
        null_models=[str(m) for m in nulls],
        **evidence,
    )


def compare_weights(
    model_a: nn.Module,
    model_b: nn.Module,
    *,
    input_shape: tuple[int, ...] | None = None,
    null_models=None,
    alpha: float = 0.01,
    cache_dir=None,
    device: str = "cpu",
):
    """Is ``model_b``'s checkpoint derived from ``model_a``'s? The score is ``matching_agreement``; its null is
    the score of ``model_a`` against independent models of the same architecture (``null_models``: modules,
    files or lineage expressions; by default 6 trained by the lineage module when it built ``model_a``).
    Returns the project's ``Verdict``, with the layers that carry the evidence."""
    import time

    shape = input_shape_of(model_a, input_shape)
    t0 = time.perf_counter()
    score, layers = matching_agreement(model_a, model_b, shape)
    evidence = {"layers": layers, "seconds": time.perf_counter() - t0}
    nulls = list(null_models) if null_models is not None else default_nulls(model_a)
    return _calibrated(
        score,
        evidence,
        nulls,
        lambda m: matching_agreement(model_a, m, shape)[0],
        alpha,
        "weights:matching-agreement",
        cache_dir,
        device,
        architecture(model_b),
        architecture(model_a),
    )


def compare_activations(
    model_a: nn.Module,
    model_b: nn.Module,
    x: torch.Tensor,
    *,
    null_models=None,
    alpha: float = 0.01,
    cache_dir=None,
    device: str = "cpu",
):
    """Is ``model_b`` a copy of ``model_a`` in another architecture (e.g. distilled into it)? The score is
    ``cka_score`` on inputs ``x``; its null is the score of ``model_a`` against independent models of any
    architecture (``null_models``; by default 2 seeds of each of 4 architectures when the lineage module built
    ``model_a``). Returns the project's ``Verdict``."""
    nulls = list(null_models) if null_models is not None else default_nulls(model_a, cross_architecture=True)
    matrix = cka_matrix(model_a, model_b, x)
    evidence = {"best_layer_cka": matrix.max(1).round(4).tolist()}
    return _calibrated(
        float(matrix.max(1).mean()),
        evidence,
        nulls,
        lambda m: cka_score(model_a, m, x),
        alpha,
        "weights:cka",
        cache_dir,
        device,
        architecture(model_b),
        architecture(model_a),
    )


# --- the weights fingerprint file ---------------------------------------------------------------------------

WEIGHTS_VERSION = 1
_WEIGHTS_FIELDS = {
    "format": str,
    "format_version": int,
    "arch": dict,
    "owner_sha256": str,
    **container.CALIBRATION_FIELDS,
}


@dataclass(frozen=True, eq=False)
class WeightsFingerprint(container.Calibrated):
    """What an owner keeps to test checkpoints later: their model's weights and architecture, its invariant
    signature, and once calibrated the matching agreement of independent models of the same architecture.
    ``verify`` needs the suspect's weights (a white-box suspect)."""

    arch: dict
    weights: dict[str, torch.Tensor]
    signature: np.ndarray
    owner_sha256: str
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    null_scores: np.ndarray | None = None
    null_models: tuple[str, ...] = ()
    target_fpr: float = 0.01
    null_strata: tuple[str, ...] = ()
    label = "weights"
    scale = Scale("correlation")  # the matching agreement is a mean Spearman correlation

    @classmethod
    def of(cls, model: nn.Module) -> WeightsFingerprint:
        from ..digest import module_digest

        cfg = getattr(model, "mp_config", None)
        if not cfg:
            raise ConfigError(
                "a weights fingerprint stores the owner's architecture to rebuild it: build the model with "
                "modelprint.nets.make_net (or load it from a modelprint folder)"
            )
        state = {k: v.detach().cpu().float().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        return cls(dict(cfg), state, signature(model), module_digest(model))

    @cached_property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.arch["input_shape"])

    @cached_property
    def owner(self) -> nn.Module:
        from ..nets import rebuild

        module = rebuild(self.arch)
        expected = {k for k, v in module.state_dict().items() if v.is_floating_point()}
        if expected != set(self.weights):
            raise ConfigError(f"weights {sorted(expected ^ set(self.weights))[:3]} do not match the architecture")
        module.load_state_dict(self.weights, strict=False)  # integer buffers (batch counters) are not stored
        return module.eval()

    @property
    def owner_arch(self) -> str | None:
        return self.arch.get("arch")

    @cached_property
    def null(self) -> Null | None:
        return None if self.null_scores is None else Null(self.null_scores, self.null_strata, self.scale)

    @cached_property
    def self_score(self) -> float:
        return self.similarity(self.owner)

    def similarity(self, suspect: nn.Module) -> float:
        return matching_agreement(self.owner, suspect, self.input_shape)[0]

    def describe(self) -> str:
        return f"weights of a {self.arch.get('arch', '?')} ({len(self.weights)} tensors), needs the suspect's weights"

    def save(self, path: str | Path) -> Path:
        from .. import container
        from .file import WEIGHTS_FORMAT

        header = {
            "format": WEIGHTS_FORMAT,
            "format_version": WEIGHTS_VERSION,
            "arch": self.arch,
            "owner_sha256": self.owner_sha256,
            **self.calibration_header(),
        }
        tensors = {f"w.{k}": v for k, v in self.weights.items()}
        tensors["signature"] = torch.from_numpy(np.asarray(self.signature, np.float32))
        tensors |= self.calibration_tensors()
        return container.write(path, header, tensors)

    @classmethod
    def from_parts(cls, path, header: dict, tensors: dict[str, torch.Tensor]) -> WeightsFingerprint:
        from .. import container
        from ..errors import FileFormatError
        from .file import WEIGHTS_FORMAT

        header = container.check(
            path,
            header,
            tensors,
            WEIGHTS_FORMAT,
            WEIGHTS_VERSION,
            _WEIGHTS_FIELDS,
            "weights fingerprint",
            container.CALIBRATION_OPTIONAL,
        )
        weights = {k[2:]: v for k, v in tensors.items() if k.startswith("w.")}
        fp = cls(
            header["arch"],
            weights,
            tensors.get("signature", torch.zeros(0)).numpy(),
            header["owner_sha256"],
            **cls.calibration_fields(header, tensors),
        )
        try:
            fp.owner  # noqa: B018 (rebuilding validates the architecture against the stored weights)
        except Exception as e:
            raise FileFormatError(f"{path}: the stored weights do not fit the stored architecture ({e})") from None
        return fp
