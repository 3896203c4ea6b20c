"""Per-recipient copies (the seed mind map's user/copy-level fingerprints, after DeepMarks: Chen et al., "DeepMarks:
A Secure Fingerprinting Framework for Digital Rights Management of Deep Learning Models", ICMR 2019): every
recipient gets a copy with its own code in the weights, so that a leaked model names who leaked it, and an average
of several leaked copies names its contributors.

Embedding, as DeepMarks: each copy is fine-tuned with a regulariser that writes the recipient's code into a hidden
layer's weights through a secret projection shared by all copies (Uchida et al.'s ``BCE(sigmoid(X w), code)``, on
the mean over the layer's output filters, as ``uchida``). Tracing: the leaked model's projection ``z = X w``
correlates with the code of every recipient who contributed to it, weighed by their share of an average. Each
recipient is scored by the correlation of ``z`` with its code (as ±1), and the score's p-value is conformal
against unassigned random codes: an innocent recipient's code is independent of the leaked weights, so it is
distributed exactly like them. Recipients are accused by Holm's correction at ``alpha``.

Deviation from DeepMarks: random codes with correlation decoding and that exact null, not the paper's codes from
a balanced incomplete block design (AND-ACC) with their group decoding; the BIBD's guarantee (any ``k`` colluders
identified) is replaced by a measured identification rate per number of colluders (``benchmarks/ownership.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import container
from ..errors import ConfigError, FileFormatError
from .schemes import Uchida, _marked_weight

FORMAT, VERSION = "modelprint-recipient-key", 1


class _Coded(Uchida):
    """Uchida's regulariser with a given projection and code: one recipient's copy."""

    def __init__(self, bits: int, layer: str, strength: float, projection: torch.Tensor, code: torch.Tensor):
        super().__init__(bits, layer, strength)
        self.projection, self.code = projection, code

    def make_key(self, model, x, y, num_classes, gen):
        return self.projection, self.code


@dataclass(frozen=True, eq=False)
class RecipientKey:
    """The owner's secret: the layer, the projection, and every recipient's code."""

    layer: str
    recipients: tuple[str, ...]
    projection: torch.Tensor  # (bits, M)
    codes: torch.Tensor  # (recipients, bits) of 0/1

    def save(self, path: str | Path) -> Path:
        header = {"format": FORMAT, "format_version": VERSION, "layer": self.layer,
                  "recipients": list(self.recipients)}  # fmt: skip
        return container.write(path, header, {"projection": self.projection, "codes": self.codes})

    @classmethod
    def load(cls, path: str | Path) -> RecipientKey:
        header, tensors = container.peek(path, "recipient key")
        fields = {"format": str, "format_version": int, "layer": str, "recipients": list}
        h = container.check(path, header, tensors, FORMAT, VERSION, fields, "recipient key")
        x, codes = tensors.get("projection"), tensors.get("codes")
        if x is None or codes is None or codes.shape != (len(h["recipients"]), len(x)):
            raise FileFormatError(f"{path}: its projection and codes do not match {len(h['recipients'])} recipients")
        return cls(h["layer"], tuple(str(r) for r in h["recipients"]), x.float(), codes.long())


def distribute(
    model: nn.Module, recipients: list[str], data="digits", *, bits: int = 128, strength: float = 0.1,
    epochs: int = 5, seed: int = 0, device: str = "cpu",
) -> tuple[list[nn.Module], RecipientKey]:  # fmt: skip
    """One marked copy of ``model`` per recipient (in their order) and the key that traces them."""
    from . import embed

    if len(set(recipients)) != len(recipients) or not recipients:
        raise ConfigError("give one or more recipients, each named once")
    layer = Uchida(bits, "", strength).for_model(model).layer
    gen = torch.Generator().manual_seed(seed)
    projection = torch.randn(bits, _marked_weight(model, layer).numel(), generator=gen)
    codes = torch.randint(0, 2, (len(recipients), bits), generator=gen)
    copies = [
        embed(model, _Coded(bits, layer, strength, projection, code), data, seed + 1 + i, epochs=epochs,
              device=device)[0]
        for i, code in enumerate(codes)
    ]  # fmt: skip
    return copies, RecipientKey(layer, tuple(recipients), projection, codes)


def average(copies: list[nn.Module]) -> nn.Module:
    """The colluders' attack: one model whose floating-point weights and buffers are the mean of ``copies``'."""
    from ..nets import clone

    out = clone(copies[0])
    state = out.state_dict()
    for k, v in state.items():
        if v.is_floating_point():
            state[k] = sum(c.state_dict()[k] for c in copies) / len(copies)
    out.load_state_dict(state)
    return out


def trace(key: RecipientKey, leaked: nn.Module, *, alpha: float = 0.01, nulls: int = 9999, seed: int = 1):
    """Who contributed to ``leaked``? Every recipient with its score (the correlation of its code with the leaked
    weights' projection), its conformal p-value against ``nulls`` unassigned random codes, and whether Holm's
    correction over the recipients accuses it at ``alpha``; the most likely first."""
    from ..decide import check_alpha

    check_alpha(alpha)
    with torch.no_grad():
        w = _marked_weight(leaked, key.layer).cpu()
    if w.numel() != key.projection.shape[1]:
        raise ConfigError(
            f"layer {key.layer!r} of the leaked model has {w.numel()} inputs, the key {key.projection.shape[1]}"
        )
    z = key.projection @ w
    z = (z - z.mean()) / (z.norm() or 1.0)

    def score(codes: torch.Tensor) -> torch.Tensor:
        return (2 * codes.float() - 1) @ z

    random = torch.randint(0, 2, (nulls, len(z)), generator=torch.Generator().manual_seed(seed))
    null = score(random)
    scores = score(key.codes)
    p = ((1 + (null[None, :] >= scores[:, None]).sum(1)) / (1 + nulls)).tolist()
    order = sorted(range(len(p)), key=lambda i: p[i])
    rows, stop = [], False
    for rank, i in enumerate(order):  # Holm: accuse in order while p <= alpha / (recipients left)
        stop = stop or p[i] > alpha / (len(p) - rank)
        rows.append({"recipient": key.recipients[i], "score": float(scores[i]), "p_value": p[i], "accused": not stop})
    return rows
