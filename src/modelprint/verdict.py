"""The one verdict type of modelprint: what fingerprints, watermarks and integrity checks all answer."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

# identical/modified: integrity checks; backdoored/clean: backdoor scans
OUTCOMES = ("related", "not related", "inconclusive", "identical", "modified", "backdoored", "clean", "valid",
            "invalid")  # fmt: skip
AFFIRMED = ("related", "identical", "backdoored", "valid")  # the outcomes with related=True


@dataclass(frozen=True)
class Verdict:
    """Is the suspect related to the owner's model? ``score`` is higher for more related models; the decision
    is ``p_value <= alpha`` (equivalently ``score > threshold``) against the null the evidence names.
    ``outcome`` is "related", "not related", or "inconclusive" when the null cannot reach ``alpha`` at any score
    (then ``threshold`` is infinite and ``warnings`` says what is missing)."""

    score: float
    threshold: float
    p_value: float
    related: bool
    queries: int  # inputs sent to the suspect
    alpha: float  # the false-positive rate the decision is held to
    scheme: str
    method: str  # how the p-value was obtained: conformal, parametric (which tail), exact binomial, ...
    evidence: dict[str, Any] = field(default_factory=dict)  # what is needed to re-check the decision
    outcome: str = ""  # one of OUTCOMES ("": read from ``related``)
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.outcome:
            object.__setattr__(self, "outcome", "related" if self.related else "not related")
        if self.outcome not in OUTCOMES or (self.outcome in AFFIRMED) != self.related:
            raise ValueError(f"verdict outcome {self.outcome!r} contradicts related={self.related}")

    def summary(self) -> str:
        word = {"related": "RELATED", "not related": "not related", "inconclusive": "INCONCLUSIVE",
                "identical": "IDENTICAL", "modified": "MODIFIED", "backdoored": "BACKDOORED",
                "clean": "clean", "valid": "VALID", "invalid": "INVALID"}[self.outcome]  # fmt: skip
        against = f"threshold {self.threshold:.4f}" if math.isfinite(self.threshold) else "no reachable threshold"
        text = (
            f"{word}: score {self.score:.4f} vs {against}, p = {format_p(self.p_value)} "
            f"({self.method}, alpha {self.alpha:g}), {self.queries} queries, scheme {self.scheme}"
        )
        return "\n".join([text, *(f"  warning: {w}" for w in self.warnings)])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_plain)


def format_p(p: float) -> str:
    if math.isnan(p):
        return "none"  # a deterministic check (integrity) has no p-value
    return f"{p:.3g}" if p >= 1e-3 or p == 0 else f"{p:.2e}"


def _plain(v: Any) -> Any:
    """numpy scalars and arrays in the evidence become JSON numbers and lists."""
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    raise TypeError(f"cannot write {type(v).__name__} as JSON")
