"""A suspect that defends itself, for robustness studies: queries that look out of distribution are answered
at random, so a fingerprint or watermark built from unusual inputs reads noise while ordinary users are served
as before. ``modelprint serve --adaptive DATA`` puts it behind the HTTP API.

An input is flagged by a density test (PCA on the reference data: the whitened distance inside the principal
subspace plus the residual outside it, each relative to the reference data's) or, for models that answer
probabilities, by low confidence. Each test's threshold is a quantile on held-out reference data at ``fpr / 2``
(``fpr`` with the density test alone), so about ``fpr`` of genuine inputs are answered at random as well: the
price of the defence, which the benchmark reports as lost accuracy.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .access import Model, as_model
from .errors import ConfigError


class Adaptive(Model):
    """``model`` behind an out-of-distribution filter fitted on ``reference`` inputs (its training data)."""

    def __init__(
        self, model: Model | nn.Module, reference: torch.Tensor, *, fpr: float = 0.05, components: int = 16,
        seed: int = 0,
    ):  # fmt: skip
        from sklearn.decomposition import PCA

        self.model = as_model(model, input_shape=tuple(reference.shape[1:]))
        if not 0 < fpr < 1:
            raise ConfigError(f"the filter's false-positive rate must be in (0, 1), got {fpr}")
        if len(reference) < 20:
            raise ConfigError(f"the filter needs at least 20 reference inputs, got {len(reference)}")
        super().__init__(self.model._num_classes, self.model._input_shape, None)
        self.output = "probs" if self.model.output in ("probs", "logits") else "labels"
        self.fpr, self.components, self.seed = fpr, components, seed
        self._gen = torch.Generator().manual_seed(seed)
        x = reference.float().flatten(1).numpy()
        order = np.random.default_rng(seed).permutation(len(x))
        fit, held = x[order[: len(x) // 2]], x[order[len(x) // 2 :]]
        self._pca = PCA(n_components=min(components, fit.shape[1], len(fit) - 1), whiten=True).fit(fit)
        inside, outside = self._parts(fit)
        self._scale = (float(inside.mean()), float(outside.mean()) or 1.0)
        share = fpr / 2 if self.output == "probs" else fpr  # two tests share the false-positive budget
        self._density_cut = float(np.quantile(self._density(held), 1 - share))
        self._confidence_cut = None
        if self.output == "probs":
            spent = self.model.queries  # fitting the filter is not the suspect answering anyone
            confidence = self.model.probs(torch.from_numpy(held).view(-1, *reference.shape[1:])).amax(1).numpy()
            self.model.queries = spent
            self._confidence_cut = float(np.quantile(confidence, share))

    def __repr__(self) -> str:
        return f"Adaptive({self.model!r}, fpr={self.fpr})"

    def _parts(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = self._pca.transform(x)
        residual = x - self._pca.inverse_transform(z)
        return (z**2).mean(1), (residual**2).sum(1)

    def _density(self, x: np.ndarray) -> np.ndarray:
        inside, outside = self._parts(x)
        return inside / self._scale[0] + outside / self._scale[1]

    def suspicious(self, x: torch.Tensor, answers: torch.Tensor | None = None) -> torch.Tensor:
        """Which inputs the filter answers at random (bool per input)."""
        flagged = torch.from_numpy(self._density(x.float().flatten(1).numpy()) > self._density_cut)
        if self._confidence_cut is not None and answers is not None:
            flagged |= answers.amax(1) < self._confidence_cut
        return flagged

    def _outputs(self, x: torch.Tensor) -> torch.Tensor:
        answers = self.model.probs(x) if self.output == "probs" else self.model.labels(x)
        flagged = self.suspicious(x, answers if self.output == "probs" else None)
        if not flagged.any():
            return answers
        answers = answers.clone()
        n, classes = int(flagged.sum()), self.model.num_classes
        if self.output == "labels":
            answers[flagged] = torch.randint(classes, (n,), generator=self._gen)
        else:  # a random distribution, as confident as a real answer
            answers[flagged] = torch.softmax(4 * torch.randn(n, classes, generator=self._gen), 1)
        return answers
