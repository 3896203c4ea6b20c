"""Several verdicts on one suspect made one: their p-values combined, by rules that hold however the tests
depend on each other (Bonferroni/Holm, a majority vote) or, labelled, by rules that assume they are independent."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from .errors import ConfigError
from .verdict import Verdict

# whether a combination method holds however the tests depend on each other
COMBINERS = {"bonferroni": True, "holm": True, "vote": True, "tippett": False, "fisher": False, "stouffer": False}


def check_method(method: str) -> None:
    """Refuse an unknown combination before any verification is spent on it."""
    if method not in COMBINERS:
        raise ConfigError(f"unknown combination {method!r}: one of {', '.join(COMBINERS)}")


def combine(p_values: Sequence[float], method: str = "bonferroni") -> float:
    """One p-value from several. ``bonferroni`` (k * min p) and ``holm`` (the same for the global null: its
    smallest adjusted p-value) hold however the tests depend on each other; ``tippett`` (1 - (1 - min p)^k),
    ``fisher`` and ``stouffer`` assume independent tests, which fingerprints of one owner sharing a suspect and
    a null set are not (they are positively dependent, and these then overstate the evidence). ``vote`` is a
    majority vote made valid under any dependence (Rüger 1978): with m tests and a majority k = floor(m/2) + 1,
    ``(m / k) * p_(k)``, the k-th smallest p-value scaled, is at most alpha only if k tests reject at k alpha / m
    (DeepJudge's judge, calibrated)."""
    check_method(method)
    if method in ("bonferroni", "holm"):
        return float(min(1.0, len(p_values) * min(p_values)))
    if method == "vote":
        m = len(p_values)
        k = m // 2 + 1
        return float(min(1.0, m / k * sorted(p_values)[k - 1]))
    return float(stats.combine_pvalues(np.clip(p_values, 1e-300, 1.0), method=method).pvalue)


def combine_verdicts(parts: Sequence[Verdict], method: str, alpha: float) -> Verdict:
    """One verdict from several on the same suspect, their p-values combined by ``method`` (see ``combine``);
    inconclusive when every part is. The score is -log10 of the combined p-value."""
    p = combine([v.p_value for v in parts], method)
    inconclusive = [v.scheme for v in parts if v.outcome == "inconclusive"]
    outcome = "related" if p <= alpha else "inconclusive" if len(inconclusive) == len(parts) else "not related"
    warnings = [] if COMBINERS[method] else [f"{method} assumes independent tests; these share a suspect and nulls"]
    if inconclusive:
        warnings.append(f"inconclusive alone: {', '.join(inconclusive)}")
    return Verdict(
        score=-math.log10(max(p, 1e-300)),
        threshold=-math.log10(alpha),
        p_value=p,
        related=outcome == "related",
        queries=sum(v.queries for v in parts),
        alpha=alpha,
        scheme="+".join(v.scheme for v in parts),
        method=f"{method} over {len(parts)} schemes" + ("" if COMBINERS[method] else " (assumes independence)"),
        outcome=outcome,
        warnings=tuple(warnings),
        evidence={v.scheme: {"score": v.score, "p_value": v.p_value, "outcome": v.outcome} for v in parts},
    )
