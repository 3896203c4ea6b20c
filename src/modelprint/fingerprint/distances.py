"""Distances between two representations; the fingerprint score is the similarity ``1 - distance``."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..base import Params, Registry

DISTANCES: Registry[Distance] = Registry("distance")


class Distance(Params):
    """Compares the owner's representation with the suspect's (same shape); 0 for identical ones."""

    kinds: ClassVar[tuple[str, ...]] = ("real",)  # representation kinds it can compare
    per_unit: ClassVar[bool] = False  # its similarity is a mean of per-unit similarities in [0, 1]
    # the range of the similarity, for the null's tail (decide.Scale): "rate" is an agreement over entries
    scale: ClassVar[str] = "distance"

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> float:
        raise NotImplementedError

    def unit_similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.spec()} is not a mean over queries")


@DISTANCES.register("hamming")
class Hamming(Distance):
    """Fraction of entries that differ (label mismatch rate)."""

    kinds, per_unit, scale = ("categorical",), True, "rate"

    def __call__(self, a, b):
        return float((a != b).float().mean())

    def unit_similarity(self, a, b):
        return (a == b).float()


@DISTANCES.register("cosine")
class Cosine(Distance):
    """Mean over rows of 1 - cos (a 1-D representation is one row)."""

    scale = "correlation"

    def __call__(self, a, b):
        a, b = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
        return float((1 - F.cosine_similarity(a, b, dim=1, eps=1e-12)).mean())


@DISTANCES.register("centred-cosine")
class CentredCosine(Distance):
    """1 - cos between the two (queries x outputs) matrices once each output's mean over the queries is removed:
    what every model answers to inputs far from the data (a bias shared by independent models) does not count,
    only how the answers vary from query to query."""

    scale = "correlation"

    def __call__(self, a, b):
        a, b = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
        a, b = (a - a.mean(0)).flatten(), (b - b.mean(0)).flatten()
        return float(1 - F.cosine_similarity(a, b, dim=0, eps=1e-12))


@DISTANCES.register("aligned-cosine")
class AlignedCosine(Distance):
    """Zest's distance (Jia et al. 2022): the columns (classes) of the suspect's matrix are first matched one to
    one with the owner's, greedily by smallest cosine distance (so a model whose classes were renamed still
    compares), then one cosine distance between the two flattened matrices."""

    scale = "correlation"

    def __call__(self, a, b):
        a, b = a.reshape(-1, a.shape[-1]).double(), b.reshape(-1, b.shape[-1]).double()
        na, nb = F.normalize(a, dim=0, eps=1e-12), F.normalize(b, dim=0, eps=1e-12)
        cost = 1 - na.T @ nb  # (classes, classes) cosine distances between columns
        order = torch.empty(a.shape[1], dtype=torch.long)
        for _ in range(a.shape[1]):
            i, j = divmod(int(cost.argmin()), cost.shape[1])
            order[i] = j
            cost[i, :], cost[:, j] = math.inf, math.inf
        return float(1 - F.cosine_similarity(a.flatten(), b[:, order].flatten(), dim=0, eps=1e-12))


@DISTANCES.register("mean-gap")
class MeanGap(Distance):
    """Half the difference of the two representations' means (values in [-1, 1]): similarity 1 for a model that
    answers like the owner, 0.5 for one without preference, 0 for one that always takes the other side."""

    scale = "unit"

    def __call__(self, a, b):
        return float((a.double().mean() - b.double().mean()) / 2)


@DISTANCES.register("abs-gap")
class AbsGap(Distance):
    """The absolute difference of the two representations' means (values in [0, 1]): DeepJudge's robustness
    distance RobD when they are robust accuracies."""

    scale = "unit"

    def __call__(self, a, b):
        return float((a.double().mean() - b.double().mean()).abs())


@DISTANCES.register("jsd")
class JSD(Distance):
    """The mean Jensen-Shannon divergence (base 2, so in [0, 1]) between the two models' probability vectors
    on each query (DeepJudge's JSD)."""

    scale = "unit"

    def __call__(self, a, b):
        p, q = a.double().clamp_min(0), b.double().clamp_min(0)
        p, q = p / p.sum(1, keepdim=True).clamp_min(1e-300), q / q.sum(1, keepdim=True).clamp_min(1e-300)
        m = (p + q) / 2

        def kl(u: torch.Tensor) -> torch.Tensor:
            return torch.where(u > 0, u * (u.clamp_min(1e-300) / m.clamp_min(1e-300)).log2(), 0.0).sum(1)

        return float(((kl(p) + kl(q)) / 2).clamp(0, 1).mean())


@DISTANCES.register("l2")
class L2(Distance):
    """Root mean square difference."""

    def __call__(self, a, b):
        return float((a.double() - b.double()).pow(2).mean().sqrt())


@DISTANCES.register("l1")
class L1(Distance):
    """Mean absolute difference."""

    def __call__(self, a, b):
        return float((a.double() - b.double()).abs().mean())


@DISTANCES.register("mutual-info")
class MutualInfo(Distance):
    """1 - I(U;V) / min(H(U), H(V)) on the co-occurrence of the two label sequences (FBI): invariant to any
    relabelling of classes. Two constant sequences count as identical."""

    kinds, scale = ("categorical",), "unit"

    def __call__(self, a, b):
        # computed from the contingency table directly: scikit-learn's normalized_mutual_info_score gives the
        # same value but its input checks cost more than a small suspect's forward pass (see the tests)
        _, u = torch.unique(a.flatten(), return_inverse=True)
        _, v = torch.unique(b.flatten(), return_inverse=True)
        nu, nv = int(u.max()) + 1, int(v.max()) + 1
        joint = torch.bincount(u * nv + v, minlength=nu * nv).reshape(nu, nv).double() / len(u)
        pu, pv = joint.sum(1), joint.sum(0)
        if nu == 1 or nv == 1:  # a constant sequence carries no information (two constants: identical)
            return 0.0 if nu == nv else 1.0
        nz = joint > 0
        mi = float((joint[nz] * (joint[nz] / (pu[:, None] * pv[None, :])[nz]).log()).sum())
        h = min(float(-(p[p > 0] * p[p > 0].log()).sum()) for p in (pu, pv))
        return max(0.0, 1.0 - mi / h)
