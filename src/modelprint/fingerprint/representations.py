"""Representations: what a fingerprint keeps of a model's answers to its queries, as a tensor a distance can
compare. ``needs`` is the access they take at verification: hard labels, probabilities or logits."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from ..access import Output
from ..base import Params, Registry

Kind = Literal["categorical", "real"]
REPRESENTATIONS: Registry[Representation] = Registry("representation")


class Representation(Params):
    """Turns a model's outputs on the queries into the tensor distances compare."""

    kind: ClassVar[Kind] = "real"
    layouts: ClassVar[tuple[str, ...]] = ("flat", "pairs", "groups")  # query layouts it can read
    per_unit: ClassVar[bool] = False  # one entry per query unit (what sequential verification needs)

    @property
    def needs(self) -> Output:
        return "probs"

    def __call__(self, out: torch.Tensor, aux: dict[str, torch.Tensor], num_classes: int) -> torch.Tensor:
        raise NotImplementedError


@REPRESENTATIONS.register("labels")
class Labels(Representation):
    """The predicted class of each query (hard-label black-box)."""

    kind, per_unit = "categorical", True

    @property
    def needs(self) -> Output:
        return "labels"

    def __call__(self, out, aux, num_classes):
        return out


@REPRESENTATIONS.register("probs")
class Probs(Representation):
    """The probability vector of each query."""

    def __call__(self, out, aux, num_classes):
        return out


@REPRESENTATIONS.register("logits")
class Logits(Representation):
    """The raw scores of each query (white-box suspects and logit APIs only)."""

    @property
    def needs(self) -> Output:
        return "logits"

    def __call__(self, out, aux, num_classes):
        return out


@REPRESENTATIONS.register("ddv")
class DDV(Representation):
    """ModelDiff's decision distance vector over (seed, variant) pairs: 1 - cos(f(x), f(x')) per pair; the hard
    variant is the label shift (label(x') - label(x)) mod C."""

    layouts = ("pairs",)

    def __init__(self, hard: bool = False):
        self.hard = hard

    @property
    def kind(self) -> Kind:  # type: ignore[override]
        return "categorical" if self.hard else "real"

    @property
    def per_unit(self) -> bool:  # type: ignore[override]
        return self.hard

    @property
    def needs(self) -> Output:
        return "labels" if self.hard else "probs"

    def __call__(self, out, aux, num_classes):
        a, b = out[0::2], out[1::2]
        if self.hard:
            return (b - a) % num_classes
        return (1 - F.cosine_similarity(a, b, dim=1, eps=1e-12))[None]  # one vector, compared as a whole


@REPRESENTATIONS.register("sac")
class SAC(Representation):
    """SAC's sample correlation: the n x n matrix of cosine similarities between the outputs on the queries
    (invariant to what the output values mean); the hard variant is label equality between queries."""

    def __init__(self, hard: bool = False):
        self.hard = hard

    @property
    def needs(self) -> Output:
        return "labels" if self.hard else "probs"

    def __call__(self, out, aux, num_classes):
        if self.hard:
            return (out[:, None] == out[None, :]).float()
        unit = F.normalize(out, dim=1, eps=1e-12)
        return unit @ unit.T


@REPRESENTATIONS.register("lime")
class Lime(Representation):
    """ZestOfLIME: per reference input, the least-squares surrogate W = pinv(M) Y mapping its masks M to the
    probabilities Y of its masked variants (one row of segments x classes weights per reference)."""

    layouts = ("groups",)

    def __call__(self, out, aux, num_classes):
        masks = aux["masks"]  # (n, m, segments)
        y = out.reshape(masks.shape[0], masks.shape[1], -1)
        return (torch.linalg.pinv(masks) @ y).flatten(1)
