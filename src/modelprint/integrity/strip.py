"""STRIP (Gao et al., ACSAC 2019): does an input carry a backdoor trigger? At inference, each input is superimposed
on clean inputs; a clean input's answer then wanders with what it was mixed with (high entropy), while a trigger
keeps sending every mixture to its target class (low entropy). The model is needed only as probabilities, so a
served model can be screened through its API.

The paper sets its cut-off at a chosen false-rejection rate of clean inputs' entropies; here that is the conformal
p-value of an input's entropy among the entropies of held-out clean inputs, so flagging at ``alpha`` rejects a
clean input with probability at most ``alpha``. ``Screening.verdict`` decides a whole batch: "backdoored" when
more of its inputs are flagged than clean inputs would be, by the count's exact (beta-binomial) null.

Deviations: the superimposition is a sum clipped to the clean data's range (the paper adds images and lets the
classifier see the sum); the score is ``1 - entropy / log C`` (higher is more suspicious, like every score here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from ..base import Params
from ..decide import check_alpha, needed
from ..errors import ConfigError
from ..verdict import Verdict


class Strip(Params):
    """Superimpose each input on ``overlays`` clean inputs drawn from ``seed`` and average the answers'
    entropies."""

    def __init__(self, overlays: int = 32, seed: int = 0):
        if overlays < 2:
            raise ConfigError(f"STRIP needs at least 2 overlays, got {overlays}")
        self.overlays, self.seed = overlays, seed

    @torch.no_grad()
    def score(self, model, x: torch.Tensor, pool: torch.Tensor, low: float, high: float) -> torch.Tensor:
        """``1 - H / log C`` per input of ``x``, with ``H`` its mean answer entropy over its overlays from ``pool``
        (a ``Model`` answering probabilities)."""
        gen = torch.Generator().manual_seed(self.seed)
        out = []
        for rows in x.split(max(1, 1024 // self.overlays)):  # a few inputs' mixtures per forward pass
            picks = torch.randint(len(pool), (len(rows), self.overlays), generator=gen)
            mixed = (rows[:, None] + pool[picks]).clamp(low, high).flatten(0, 1)
            p = model.probs(mixed).double().clamp_min(1e-12)
            entropy = -(p * p.log()).sum(1).view(len(rows), self.overlays).mean(1)
            out.append(1 - entropy / math.log(p.shape[1]))
        return torch.cat(out)


@dataclass(frozen=True)
class Screening:
    """STRIP's scores of screened inputs, against those of held-out clean inputs."""

    scores: torch.Tensor
    null_scores: torch.Tensor

    @property
    def p_values(self) -> torch.Tensor:
        """Conformal p-values: the share of clean inputs at least as suspicious, counting the input itself."""
        above = (self.null_scores[None, :] >= self.scores[:, None]).sum(1)
        return (1 + above.double()) / (1 + len(self.null_scores))

    def flagged(self, alpha: float = 0.05) -> torch.Tensor:
        return self.p_values <= alpha

    def verdict(self, alpha: float = 0.05) -> Verdict:
        """Does the batch carry triggers? Its score is the share of inputs flagged at ``alpha``. Over clean inputs,
        that count is exactly beta-binomial, whatever the model: the flagging rate of one set of ``n`` clean
        inputs is Beta(k, n + 1 - k) with ``k = floor(alpha (n + 1))``, and the screened inputs are flagged
        independently at that rate. Inconclusive when too few clean inputs were scored to flag anything."""
        check_alpha(alpha)
        m, n = len(self.scores), len(self.null_scores)
        k = math.floor(alpha * (1 + n))
        flagged = int(self.flagged(alpha).sum())
        if k == 0:
            return Verdict(
                score=flagged / m, threshold=math.inf, p_value=1.0, related=False, queries=m, alpha=alpha,
                scheme="integrity:STRIP", outcome="inconclusive", method="conformal",
                warnings=(f"{n} clean inputs cannot flag an input at {alpha:g}: score at least {needed(alpha, None)}",),
            )  # fmt: skip
        counts = stats.betabinom(m, k, n + 1 - k)
        p = float(counts.sf(flagged - 1))
        reachable = np.nonzero(counts.sf(np.arange(m + 1)) <= alpha)[0]  # sf(c) = P(count >= c + 1)
        least = int(reachable[0]) + 1 if len(reachable) else m + 1  # the fewest flagged inputs that reject
        outcome = "backdoored" if p <= alpha else "clean"
        return Verdict(
            score=flagged / m, threshold=(least - 0.5) / m if least <= m else math.inf, p_value=p,
            related=outcome == "backdoored", queries=m, alpha=alpha, scheme="integrity:STRIP", outcome=outcome,
            method=f"conformal over {n} clean inputs, beta-binomial count of flagged inputs",
            evidence={"flagged": flagged, "screened": m, "clean_inputs": n,
                      "flagged_inputs": torch.nonzero(self.flagged(alpha)).flatten().tolist()},
        )  # fmt: skip


def strip(
    model,
    inputs,
    data="digits",
    *,
    overlays: int = 32,
    clean: int = 200,
    seed: int = 0,
    cache_dir=None,
    device: str = "cpu",
) -> Screening:
    """Screen ``inputs`` (n, ...) for triggers in ``model`` (a module, a ``Model``, a probabilities callable, a
    file or an expression). ``data`` gives clean held-out inputs: ``clean`` of them are scored as the null, the
    others are the overlays."""
    from ..fingerprint.helpers import held_out
    from ..lineage import resolve_model

    x, _, _ = held_out(data)
    inputs = torch.as_tensor(inputs, dtype=x.dtype)
    if inputs.ndim != x.ndim or inputs.shape[1:] != x.shape[1:] or len(inputs) == 0:
        raise ConfigError(f"inputs of shape {tuple(inputs.shape)} do not match the data's {tuple(x.shape[1:])}")
    if not 2 <= clean <= len(x) - 2:
        raise ConfigError(f"need 2 <= clean <= {len(x) - 2} (the data has {len(x)} held-out inputs), got {clean}")
    target = resolve_model(model, tuple(x.shape[1:]), None, cache_dir, device)
    if target.output == "labels":
        raise ConfigError("STRIP reads the entropy of probabilities: this model answers labels only")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    null_x, pool = x[order[:clean]], x[order[clean:]]
    low, high = float(x.min()), float(x.max())
    detector = Strip(overlays, seed)
    return Screening(detector.score(target, inputs, pool, low, high), detector.score(target, null_x, pool, low, high))
