"""Training-set inspection: which examples of a training set were poisoned to plant a backdoor? Both detectors read
the model's last hidden representation of every example (the input of its last Linear/Conv layer), class by
class: a poisoned example carries the target's label, and among that class's examples it stands apart, because
what the model recognises in it is the trigger, not the class's content.

- ``spectral-signatures`` (Tran, Li & Madry, NeurIPS 2018): within each class, an example's score is the squared
  projection of its centred representation on the class's top singular vector; the ``1.5 eps`` highest-scoring
  examples of every class are removed, ``eps`` an upper bound on the poisoned fraction.
- ``activation-clustering`` (Chen et al., "Detecting Backdoor Attacks on Deep Neural Networks by Activation
  Clustering", 2018): within each class, the representations are projected on ``dims`` components and split in
  two by k-means; each cluster is judged by the paper's exclusionary reclassification (left out of the training
  data, a poisoned cluster is classified as the classes its inputs came from, a legitimate one as its label).
  The cluster that looks least like its class is removed when most of it is classified as other classes. Score:
  the share of an example's cluster classified as another class.

A ranking of the examples and the removal each paper prescribes, not a p-value: neither paper gives a null for its
statistic, and a class's statistic taken as a model's score (the largest over classes) did not separate
backdoored from clean models on the digits zoo. ``benchmarks/backdoor.py`` measures both against the known
poisoned rows of the zoo's backdoors; on a foreign residual MLP with LayerNorm neither detector isolated them.

Deviations: the representation is that of the layer feeding the last weight layer for any architecture (the
papers name the penultimate layer of their CNNs). Activation Clustering projects on the top principal components
where the paper runs ICA, which whitens them: on classes of tens of examples, whitening gives noise directions the
weight of the trigger's and k-means then splits on noise (measured on the digits zoo: mixed clusters, where the
unwhitened projection gives pure ones). Its exclusionary reclassification is by the nearest class mean of the
representations rather than by retraining the network (a logistic regression head in its place kept the poisoned
clusters in the target class on the digits zoo: the backdoored network had already made them linearly separable
towards it). Classes of fewer than ``2 dims`` examples are left unflagged, and so is a cluster that leaves fewer than
``dims`` examples of its class to stand for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..base import Params, Registry
from ..errors import ConfigError
from ..nets import weight_layers

SIFTERS: Registry[Sifter] = Registry("training-set detector")


class Sifter(Params):
    """A training-set detector: ``sift(features, labels)`` is ``(scores, flagged)`` per example, scores higher for a
    more likely poisoned example and comparable within a class."""

    def sift(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def _nothing(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of 0 and no removal for ``n`` examples, which each class's own then replace."""
    return torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.bool)


def _classes(labels: torch.Tensor, smallest: int):
    """The rows of every class with at least ``smallest`` examples."""
    for c in labels.unique().tolist():
        rows = torch.nonzero(labels == c).flatten()
        if len(rows) >= smallest:
            yield c, rows


@SIFTERS.register("spectral-signatures")
class SpectralSignatures(Sifter):
    """Tran et al.'s outlier score: the squared projection on the class's top singular vector; removes the
    ``1.5 eps`` highest of every class."""

    def __init__(self, eps: float = 0.1):
        if not 0 < eps < 1 / 1.5:
            raise ConfigError(f"spectral signatures need 0 < eps < 2/3 (a bound on the poisoned share), got {eps}")
        self.eps = eps

    def sift(self, features, labels):
        scores, flagged = _nothing(len(labels))
        for _, rows in _classes(labels, 2):
            centred = features[rows].double() - features[rows].double().mean(0)
            top = torch.linalg.svd(centred, full_matrices=False).Vh[0]
            scores[rows] = (centred @ top) ** 2
            flagged[rows[scores[rows].argsort(descending=True)[: int(1.5 * self.eps * len(rows))]]] = True
        return scores, flagged


@SIFTERS.register("activation-clustering")
class ActivationClustering(Sifter):
    """Chen et al.'s two clusters per class over ``dims`` components, each judged by exclusionary
    reclassification: classified without it, a poisoned cluster looks like other classes."""

    def __init__(self, dims: int = 10, seed: int = 0):
        if dims < 1:
            raise ConfigError(f"activation clustering needs dims >= 1, got {dims}")
        self.dims, self.seed = dims, seed

    def split(self, features: torch.Tensor) -> torch.Tensor | None:
        """Two clusters of one class's representations (None when they do not vary)."""
        from sklearn.cluster import KMeans

        centred = (features - features.mean(0)).numpy()
        u, sv, _ = np.linalg.svd(centred, full_matrices=False)
        dims = min(self.dims, int(np.sum(sv > 1e-6 * sv[0])) if sv[0] > 0 else 0)
        if dims == 0:
            return None
        reduced = u[:, :dims] * sv[:dims]  # the principal components, not whitened (see the module's docstring)
        return torch.from_numpy(KMeans(2, n_init=10, random_state=self.seed).fit(reduced).labels_)

    @staticmethod
    def foreign(features: torch.Tensor, labels: torch.Tensor, cluster: torch.Tensor, label: int) -> float:
        """Exclusionary reclassification: the share of ``cluster`` nearer another class's mean representation
        than its own class's once the cluster is left out."""
        rest = torch.ones(len(labels), dtype=torch.bool)
        rest[cluster] = False
        classes = labels[rest].unique()
        centres = torch.stack([features[rest & (labels == d)].mean(0) for d in classes.tolist()])
        return float((classes[torch.cdist(features[cluster], centres).argmin(1)] != label).double().mean())

    def sift(self, features, labels):
        features = features.double()
        scores, flagged = _nothing(len(labels))
        for c, rows in _classes(labels, 2 * self.dims):
            split = self.split(features[rows])
            if split is None:
                continue
            clusters = [rows[split == k] for k in (0, 1)]
            # a cluster that leaves fewer than dims examples of its class is not judged: the mean of a handful does
            # not stand for a class (a clean class split 35/3 had its 35 "look foreign" to its 3)
            foreign = [
                self.foreign(features, labels, cluster, c) if len(rows) - len(cluster) >= self.dims else 0.0
                for cluster in clusters
            ]
            for cluster, share in zip(clusters, foreign, strict=True):
                scores[cluster] = share
            # the cluster that looks least like its class (on a tie, the smaller), if most of it does not: left out,
            # a clean cluster can look foreign too, when the poisoned rest then stands for its class
            suspect = max((0, 1), key=lambda k: (foreign[k], -len(clusters[k])))
            flagged[clusters[suspect]] = foreign[suspect] > 0.5
        return scores, flagged


@dataclass(frozen=True)
class Sifting:
    """A detector's scores and removals over a training set."""

    detector: str
    scores: torch.Tensor
    flagged: torch.Tensor
    labels: torch.Tensor

    def per_class(self) -> list[dict]:
        """Examples and removals of every class."""
        return [
            {
                "class": int(c),
                "examples": int((self.labels == c).sum()),
                "flagged": int(self.flagged[self.labels == c].sum()),
            }
            for c in self.labels.unique()
        ]

    def against(self, poisoned: torch.Tensor) -> dict[str, float]:
        """How the removal fares against the known ``poisoned`` mask: recall and precision of the removed examples,
        and the AUC of the scores within the classes that hold poisoned examples (scores compare within a class)."""
        from sklearn.metrics import roc_auc_score

        poisoned = poisoned.bool()
        removed = int(self.flagged.sum())
        hit = int((self.flagged & poisoned).sum())
        aucs, weights = [], []
        for c in self.labels[poisoned].unique():
            rows = self.labels == c
            if 0 < poisoned[rows].sum() < rows.sum():
                aucs.append(roc_auc_score(poisoned[rows].numpy(), self.scores[rows].numpy()))
                weights.append(int(poisoned[rows].sum()))
        return {
            "recall": hit / max(int(poisoned.sum()), 1),
            "precision": hit / removed if removed else float("nan"),
            "removed": removed,
            "auc": float(np.average(aucs, weights=weights)) if aucs else float("nan"),
        }


def representations(model: nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """The input of ``model``'s last Linear/Conv layer on ``x``, one row per example."""
    if isinstance(model, torch.jit.ScriptModule):
        raise ConfigError("training-set detectors read a hidden layer: give the model as weights, not TorchScript")
    layers = weight_layers(model)
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no Linear/Conv layer to read representations before")
    out: list[torch.Tensor] = []
    hook = layers[-1].register_forward_pre_hook(lambda _m, args: out.append(args[0].detach().float().flatten(1).cpu()))
    device = next(model.parameters()).device
    try:
        was = model.training
        model.eval()
        with torch.no_grad():
            for rows in x.split(batch):
                model(rows.to(device))
        model.train(was)
    finally:
        hook.remove()
    return torch.cat(out)


def sift(
    model, data, detector: str | Sifter = "activation-clustering", *, cache_dir=None, device: str = "cpu"
) -> Sifting:
    """Which examples of the training set ``data`` ((x, y) tensors, a Dataset, or a registered dataset's train split)
    did a poisoner plant in ``model`` (a module, model file or lineage expression)?"""
    from ..fingerprint.helpers import training_set
    from ..lineage import resolve
    from ..nets import clone

    x, y, _ = training_set(data)
    module = resolve(model, cache_dir=cache_dir, device=device)
    if not isinstance(module, nn.Module):
        raise ConfigError(f"training-set detectors read a model's hidden layer, not a {type(module).__name__}")
    sifter = detector if isinstance(detector, Sifter) else SIFTERS.from_spec(detector)
    # a copy on the device: the caller's model stays where it was
    scores, flagged = sifter.sift(representations(clone(module).to(device).float(), x), y.cpu())
    return Sifting(sifter.spec(), scores, flagged, y.cpu())
