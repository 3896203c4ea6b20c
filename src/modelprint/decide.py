"""From a score to a ``Verdict``: calibrated nulls (empirical, with a Student-t tail when the null set is small),
analytic binomial nulls where they are honest, p-value combination, and the bound that lets a verification
stop early. Shared by fingerprints, watermarks and integrity checks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import special, stats

from .errors import ConfigError
from .verdict import Verdict

# Below this many null scores an empirical p-value cannot go under 1/(n+1); a parametric tail is used instead.
SMALL_NULL = 200


class Null:
    """The distribution of scores of unrelated models: p-values and thresholds at a false-positive rate."""

    method: str

    def p_value(self, score: float) -> float:
        raise NotImplementedError

    def threshold(self, alpha: float) -> float:
        """The score above which a suspect is declared related at false-positive rate ``alpha``."""
        raise NotImplementedError


@dataclass(frozen=True)
class EmpiricalNull(Null):
    """Scores of models known to be unrelated. With ``SMALL_NULL`` or more of them the p-value is the empirical
    ``(1 + #{null >= s}) / (1 + n)``; with fewer it is the upper tail of the Student-t predictive distribution
    of a new null score (a normal model of the null fitted to ``n`` scores)."""

    scores: np.ndarray

    def __post_init__(self) -> None:
        s = np.asarray(self.scores, dtype=np.float64)
        if s.ndim != 1 or len(s) < 2:
            raise ConfigError(f"a null needs at least 2 scores, got {s.size}")
        if not np.isfinite(s).all():
            raise ConfigError("null scores contain NaN or infinite values")
        object.__setattr__(self, "scores", s)

    @property
    def method(self) -> str:  # type: ignore[override]
        return "empirical" if len(self.scores) >= SMALL_NULL else "t-tail"

    def p_empirical(self, score: float) -> float:
        return float((1 + np.sum(self.scores >= score)) / (1 + len(self.scores)))

    @cached_property
    def _t(self) -> tuple[float, float, int]:
        n = len(self.scores)
        mean = float(self.scores.mean())
        sd = max(float(self.scores.std(ddof=1)), 1e-9 * max(1.0, abs(mean)))  # identical nulls: no spread
        return mean, sd * math.sqrt(1 + 1 / n), n - 1

    def p_value(self, score: float) -> float:
        if self.method == "empirical":
            return self.p_empirical(score)
        mean, scale, df = self._t
        return float(special.stdtr(df, -(score - mean) / scale))  # the ufunc: scipy.stats' sf is 50x slower

    def threshold(self, alpha: float) -> float:
        check_alpha(alpha)
        if self.method == "t-tail":
            mean, scale, df = self._t
            return float(mean + scale * special.stdtrit(df, 1 - alpha))
        # p <= alpha  <=>  at most k null scores reach s  <=>  s above the (k+1)-th largest null score
        k = math.floor(alpha * (len(self.scores) + 1)) - 1
        return math.inf if k < 0 else float(np.sort(self.scores)[::-1][k])


@dataclass(frozen=True)
class BinomialNull(Null):
    """A score that is a success rate over ``n`` independent trials, each a success with probability ``p``
    under the null (random-label trigger sets: ``p = 1/C``; bit strings: ``p = 1/2``)."""

    n: int
    p: float
    method = "binomial"

    def p_value(self, score: float) -> float:
        k = round(score * self.n)
        return float(stats.binom.sf(k - 1, self.n, self.p))

    def threshold(self, alpha: float) -> float:
        check_alpha(alpha)
        k = int(stats.binom.isf(alpha, self.n, self.p)) + 1  # smallest k with P(X >= k) <= alpha
        return (k - 1) / self.n


@dataclass(frozen=True)
class Strictest(Null):
    """The largest p-value of several nulls, each describing one source of chance: honest when any one of them
    is. A watermark key of natural inputs needs two: the inputs of one clean model vary (binomial), and clean
    models differ from each other (their match rates, t-tail)."""

    nulls: tuple[Null, ...]

    @property
    def method(self) -> str:  # type: ignore[override]
        return "+".join(n.method for n in self.nulls)

    def p_value(self, score: float) -> float:
        return max(n.p_value(score) for n in self.nulls)

    def threshold(self, alpha: float) -> float:
        return max(n.threshold(alpha) for n in self.nulls)


def rate_null(clean_rates, n: int) -> Strictest:
    """The null of a success rate over ``n`` trials whose per-trial chance is only known from clean models'
    rates. Two sources of chance: within a model each trial succeeds with the probability of the clean model
    that succeeded most (Laplace-smoothed, so honest even when no clean model ever did); between models the
    rate itself varies (a key speaks to some architectures more than others), which the t-tail over the clean
    rates covers. The larger p-value holds."""
    rates = np.asarray(clean_rates, dtype=np.float64)
    k = np.round(rates * n)
    return Strictest((BinomialNull(n, float(((k + 1) / (n + 2)).max())), EmpiricalNull(rates)))


def check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ConfigError(f"a false-positive rate must be in (0, 1), got {alpha}")


def decide(score: float, null: Null, alpha: float, *, queries: int, scheme: str, **evidence) -> Verdict:
    """The verdict on ``score`` against ``null`` at false-positive rate ``alpha``."""
    p = null.p_value(score)
    if isinstance(null, EmpiricalNull):
        evidence = {"n_null": len(null.scores), "p_empirical": null.p_empirical(score), **evidence}
    return Verdict(
        score=float(score),
        threshold=null.threshold(alpha),
        p_value=p,
        related=bool(p <= alpha),
        queries=int(queries),
        alpha=float(alpha),
        scheme=scheme,
        method=null.method,
        evidence=evidence,
    )


def combine(p_values: Sequence[float], method: str = "fisher") -> float:
    """One p-value from several: ``fisher`` or ``stouffer`` (independent tests), ``tippett`` (the smallest,
    1 - (1 - min p)^k), or ``bonferroni`` (k min p, valid however the tests depend on each other)."""
    if method == "bonferroni":
        return float(min(1.0, len(p_values) * min(p_values)))
    return float(stats.combine_pvalues(np.clip(p_values, 1e-300, 1.0), method=method).pvalue)


def serfling_radius(n: int, population: int, looks: int, delta: float, span: float = 1.0) -> float:
    """Half-width of an interval holding the mean of a finite population of ``population`` values (in a range of
    width ``span``) with probability ``1 - delta``, from ``n`` of them drawn without replacement, simultaneously
    at ``looks`` looks (Hoeffding-Serfling inequality with a union bound). Zero once the whole population is in."""
    if n >= population:
        return 0.0
    if n <= 0:
        return math.inf
    return span * math.sqrt((1 - (n - 1) / population) * math.log(2 * looks / delta) / (2 * n))
