"""Integrity: is the served model exactly the released one? (the mind map's "m = m'").

``seal(model, data, budget)`` picks SSF's sensitive samples (He et al., CVPR 2019; ``fingerprint.crafted``):
natural inputs nudged so that the top probability moves as much as possible with the last layer's weights, chosen
to cover the penultimate units. The seal file keeps them with the released model's probabilities and labels.
``check(seal, suspect)`` asks the suspect about them: where it answers probabilities, every log-probability must
be within ``tolerance`` of the sealed one, i.e. every probability within a relative ``tolerance`` (benign
re-exports, TorchScript, ONNX, another thread count or batching, differ by about 5e-6; a half-precision copy by
about 2e-2 and is reported as modified); where it answers labels only, every label must match. The verdict is
deterministic: no null model is needed, so it has no p-value.

Why log-probabilities: a confident sample's top probability saturates near 1, so an edit moves it by far less than
it moves the small probabilities of the other classes; in absolute terms those moves vanish, in relative terms they
are what an edit leaves. Compared on log-probabilities, 10 sensitive samples catch 39 of the 40 single-weight
edits (of 50) that move some test log-probability by more than the tolerance; compared on probabilities, about 60%
of single-weight edits were caught (``benchmarks/integrity.py``).
Probabilities below ``FLOOR`` are compared at the floor, where float32 answers lose their precision.

Deviation from the paper: SSF maximises the gradient norm over all weights; here over the last linear layer (a
closed form, so one backward pass per step), as ``schemes.md`` specifies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from .. import container
from ..access import WhiteBox
from ..errors import ConfigError, FileFormatError
from ..verdict import Verdict

FORMAT, VERSION = "modelprint-integrity-seal", 1
TOLERANCE = 1e-4  # largest benign difference of a log-probability, measured in benchmarks/integrity.py
FLOOR = 1e-30  # probabilities below this are taken as equal (float32 subnormals start at 1.2e-38)
_FIELDS = {
    "format": str, "format_version": int, "dataset": str, "seed": int, "eps": float, "tolerance": float,
    "owner_sha256": (str, type(None)), "created": str, "modelprint_version": str,
}  # fmt: skip


@dataclass(frozen=True, eq=False)
class Seal:
    """The released model's answers on its sensitive samples."""

    inputs: torch.Tensor
    probs: torch.Tensor
    dataset: str
    seed: int
    eps: float
    tolerance: float = TOLERANCE
    owner_sha256: str | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def labels(self) -> torch.Tensor:
        return self.probs.argmax(1)

    def __repr__(self) -> str:
        return f"Seal({len(self.inputs)} sensitive samples on {self.dataset}, tolerance {self.tolerance:g})"

    def save(self, path: str | Path) -> Path:
        from .. import __version__

        header = {
            "format": FORMAT, "format_version": VERSION, "dataset": self.dataset, "seed": self.seed,
            "eps": self.eps, "tolerance": self.tolerance, "owner_sha256": self.owner_sha256,
            "created": self.created, "modelprint_version": __version__,
        }  # fmt: skip
        return container.write(path, header, {"inputs": self.inputs, "probs": self.probs})

    @classmethod
    def load(cls, path: str | Path) -> Seal:
        header, tensors = container.peek(path, "integrity seal")
        header = container.check(path, header, tensors, FORMAT, VERSION, _FIELDS, "integrity seal")
        x, p = tensors.get("inputs"), tensors.get("probs")
        if x is None or p is None or len(x) != len(p) or p.ndim != 2 or not x.is_floating_point():
            raise FileFormatError(f"{path}: integrity seal lacks consistent inputs and probabilities")
        return cls(x, p, header["dataset"], header["seed"], header["eps"], header["tolerance"],
                   header["owner_sha256"], header["created"])  # fmt: skip


def seal(
    model: nn.Module,
    data="digits",
    budget: int = 10,
    seed: int = 0,
    *,
    eps: float = 0.05,
    steps: int = 20,
    tolerance: float = TOLERANCE,
    device: str = "cpu",
) -> Seal:
    """Seal the released ``model`` (a torch module: the samples are optimised on its gradients) with ``budget``
    sensitive samples grown from ``data``'s held-out inputs within ``eps`` of their range."""
    from ..digest import module_digest
    from ..fingerprint import make_scheme
    from ..fingerprint.helpers import held_out
    from ..fingerprint.queries import Context

    if not isinstance(model, nn.Module):
        raise ConfigError("sealing optimises inputs on the model's gradients: it needs a torch module")
    if budget < 1 or not 0 <= tolerance < 1:
        raise ConfigError(f"need budget >= 1 and 0 <= tolerance < 1, got {budget} and {tolerance}")
    x, y, name = held_out(data)
    owner = WhiteBox(model, input_shape=tuple(x.shape[1:]), device=device)
    sampler = make_scheme(f"sensitive(eps={eps},steps={steps})+probs+l2").sampler
    gen = torch.Generator().manual_seed(seed)
    inputs = sampler.sample(Context(owner, x, y, budget, gen, device)).x.float()
    return Seal(inputs, owner.probs(inputs).double(), name, seed, eps, tolerance, module_digest(model))


def check(seal: Seal, suspect, *, tolerance: float | None = None, cache_dir=None, device: str = "cpu") -> Verdict:
    """Is ``suspect`` (a module, a ``Model``, a labels callable, a model file or an expression) exactly the sealed
    model? Outcome "identical" or "modified"; the evidence names the samples it answered otherwise."""
    from ..lineage import resolve_model

    tol = seal.tolerance if tolerance is None else tolerance
    model = resolve_model(suspect, tuple(seal.inputs.shape[1:]), seal.probs.shape[1], cache_dir, device)
    if model.output == "labels":
        answered = model.labels(seal.inputs)
        matches, compared, gap = answered == seal.labels, "labels", None
    else:
        probs = model.probs(seal.inputs).double()
        if probs.shape != seal.probs.shape:
            raise ConfigError(f"the suspect answers {probs.shape[1]} classes, the sealed model {seal.probs.shape[1]}")
        diff = (probs.clamp_min(FLOOR).log() - seal.probs.clamp_min(FLOOR).log()).abs().amax(1)
        compared = f"log-probabilities (±{tol:g})"
        matches, gap = (diff <= tol) & (probs.argmax(1) == seal.labels), diff
    n, identical = len(matches), bool(matches.all())
    evidence = {"compared": compared, "mismatched_samples": torch.nonzero(~matches).flatten().tolist()}
    if gap is not None:
        evidence["largest_difference"] = float(gap.max())
    return Verdict(
        score=float(matches.float().mean()), threshold=1 - 0.5 / n, p_value=math.nan, related=identical,
        queries=n, alpha=0.0, scheme="integrity:SSF",
        method="deterministic: every sensitive sample must be answered as sealed", evidence=evidence,
        outcome="identical" if identical else "modified",
    )  # fmt: skip
