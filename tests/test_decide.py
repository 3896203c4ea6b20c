"""Distances' properties, calibrated thresholds that hold their false-positive rate, and the sequential bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

from modelprint.decide import (
    CONFIDENCE,
    Null,
    Scale,
    binomial_p,
    combine,
    decide,
    decide_binomial,
    needed,
    rate_null,
    serfling_radius,
)
from modelprint.errors import ConfigError
from modelprint.fingerprint import DISTANCES

labels = st.lists(st.integers(0, 9), min_size=2, max_size=60)
reals = st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=4, max_size=40)


@given(labels, st.permutations(range(10)))
def test_mutual_info_is_invariant_to_relabelling(u, perm):
    a = torch.tensor(u)
    relabelled = torch.tensor([perm[i] for i in u])
    d = DISTANCES.make("mutual-info")
    assert d(a, relabelled) == pytest.approx(0.0, abs=1e-9)
    assert d(a, a) == pytest.approx(0.0, abs=1e-9)


@given(labels, labels)
def test_categorical_distances_are_symmetric_and_bounded(u, v):
    n = min(len(u), len(v))
    a, b = torch.tensor(u[:n]), torch.tensor(v[:n])
    for name in ("hamming", "mutual-info"):
        d = DISTANCES.make(name)
        assert d(a, b) == pytest.approx(d(b, a), abs=1e-9)
        assert -1e-9 <= d(a, b) <= 1 + 1e-9
    assert DISTANCES.make("hamming")(a, a) == 0.0


@given(reals, reals)
def test_real_distances_identity_and_symmetry(u, v):
    n = min(len(u), len(v)) // 2 * 2
    a, b = torch.tensor(u[:n]).view(-1, 2), torch.tensor(v[:n]).view(-1, 2)
    for name in ("cosine", "l2", "l1"):
        d = DISTANCES.make(name)
        assert d(a, a) == pytest.approx(0.0, abs=1e-6) or (name == "cosine" and (a.norm(dim=1) < 1e-6).any())
        assert d(a, b) == pytest.approx(d(b, a), abs=1e-9)
        assert d(a, b) >= -1e-9


def test_mutual_info_sees_dependence_hamming_does_not():
    u = torch.arange(100) % 10
    shifted = (u + 1) % 10  # a relabelled copy: every label differs, all information is shared
    assert DISTANCES.make("hamming")(u, shifted) == 1.0
    assert DISTANCES.make("mutual-info")(u, shifted) == pytest.approx(0.0)
    noise = torch.randint(0, 10, (100,), generator=torch.Generator().manual_seed(0))
    assert DISTANCES.make("mutual-info")(u, noise) > 0.5


def _v(score, null, alpha=0.05, **kw):
    return decide(score, null, alpha, queries=0, scheme="test", **kw)


@pytest.mark.parametrize(("n_null", "scale"), [(12, Scale("unit")), (19, Scale("unit")), (99, Scale("correlation"))])
def test_decisions_hold_their_fpr(n_null, scale):
    # the FPR of a decision at alpha, averaged over null samples, is at most alpha: exactly (conformal) with
    # n >= 1/alpha - 1 null models, approximately (t-tail on the score's scale) with fewer
    rng = np.random.default_rng(n_null)
    alpha, fprs = 0.05, []
    for _ in range(150):
        null = Null(special.expit(rng.normal(0, 0.5, n_null)), scale=scale)
        fresh = special.expit(rng.normal(0, 0.5, 400))
        fprs.append(np.mean([null.p_value(s) <= alpha for s in fresh]))
    sem = np.std(fprs) / math.sqrt(len(fprs))
    assert np.mean(fprs) < alpha + 4 * sem + 0.005, (np.mean(fprs), sem)


def test_decisions_hold_their_fpr_for_this_null_set():
    # the FPR of one fixed null set exceeds alpha for at most 1 - confidence of null sets (here: uniform scores,
    # so the FPR of a threshold tau is exactly 1 - tau); the marginal conformal p-value exceeds it far more often
    rng = np.random.default_rng(5)
    alpha, n = 0.05, needed(0.05)
    assert n == 90 and needed(0.01) == 459 and needed(0.05, None) == 19
    over = {CONFIDENCE: [], None: []}
    for _ in range(2000):
        u = rng.uniform(0, 1, n)
        for confidence, out in over.items():
            out.append(1 - Null(u, confidence=confidence).threshold(alpha) > alpha)
    assert np.mean(over[CONFIDENCE]) < 1 - CONFIDENCE + 0.01 and np.mean(over[None]) > 0.2, {
        k: np.mean(v) for k, v in over.items()
    }


def test_threshold_and_p_value_agree():
    rng = np.random.default_rng(1)
    for n, scale in ((5, Scale("correlation")), (50, Scale("correlation")), (300, Scale("real"))):
        null = Null(np.tanh(rng.normal(0, 0.3, n)), scale=scale)
        tau = null.threshold(0.05)
        for s in np.linspace(-0.99, 0.99, 57):
            assert (null.p_value(s) <= 0.05) == (s > tau), (n, s, tau)


def test_conformal_p_value_and_degenerate_nulls():
    scores = np.arange(300.0) / 300
    marginal = Null(scores, scale=Scale("unit"), confidence=None)
    assert marginal.p_value(0.5) == pytest.approx(151 / 301)  # 1 + the 150 null scores at or above 0.5
    null = Null(scores, scale=Scale("unit"))  # training-conditional: Clopper-Pearson's 99% bound on 150 of 300
    assert null.p_value(0.5) == pytest.approx(stats.beta.ppf(CONFIDENCE, 151, 150)) and null.p_value(0.5) > 151 / 301
    assert null.p_value(-1) == 1.0
    assert null.p_value(0.999) < 1 / 301  # beyond every null: the tail refines the bound
    # null scores all alike: no tail is fitted beyond them (it would be infinitely narrow), only the
    # distribution-free bound of 5 models, which cannot reach 0.05
    same = Null(np.full(5, 0.9), scale=Scale("unit"))
    assert same.p_value(0.9) == pytest.approx(1.0)
    assert same.p_value(0.95) == pytest.approx(1 - (1 - CONFIDENCE) ** (1 / 5)) and math.isinf(same.threshold(0.05))
    flat = _v(0.95, same, alpha=0.05)
    assert flat.outcome == "inconclusive" and flat.method.startswith("conformal") and "alike" in flat.warnings[-1]
    enough = Null(np.zeros(needed(0.05)), scale=Scale("real"))  # enough of them: a distribution-free decision
    assert _v(0.5, enough, alpha=0.05).outcome == "related" and enough.p_value(0.5) == pytest.approx(0.05, rel=0.03)
    with pytest.raises(ConfigError, match="at least 2"):
        Null(np.array([0.5]))
    with pytest.raises(ConfigError, match="NaN"):
        Null(np.array([0.5, np.nan]))
    with pytest.raises(ConfigError, match="false-positive rate"):
        null.threshold(1.5)


@pytest.mark.parametrize("scale", [Scale("unit"), Scale("correlation"), Scale("distance"), Scale("rate", 100)])
def test_a_threshold_never_exceeds_the_score_range(scale):
    # three null models spread widely: no score in range can reach 0.001, so the verdict is inconclusive and
    # shows no threshold; a perfect score against a tight null is related
    wide = Null(np.array([0.1, 0.5, 0.9]), scale=scale)
    v = _v(1.0, wide, alpha=0.001)
    assert v.outcome == "inconclusive" and not v.related and math.isinf(v.threshold)
    assert "add" in v.warnings[-1] and "null models" in v.warnings[-1]
    tight = Null(np.array([0.30, 0.32, 0.35, 0.31]), scale=scale)
    assert _v(1.0, tight, alpha=0.01).outcome == "related"
    for alpha in (0.05, 0.01):
        assert tight.threshold(alpha) <= 1.0


def test_three_outcomes_and_methods():
    rng = np.random.default_rng(3)
    big = Null(special.expit(rng.normal(0, 0.3, needed(0.01))), scale=Scale("unit"))
    assert _v(0.5, big, 0.01).outcome == "not related" and _v(0.5, big, 0.01).method.startswith("conformal (")
    top = _v(0.999, big, 0.01)
    assert top.related and top.p_value < 0.01 / 10 and "beyond the nulls" in top.method
    small = Null(special.expit(rng.normal(0, 0.3, 5)), scale=Scale("unit"))
    assert _v(0.999, small, 0.01).method.startswith("parametric")
    # null models at the score's maximum (random inputs on an easy task): nothing can be concluded
    saturated = _v(1.0, Null(np.ones(30), scale=Scale("rate", 100)), 0.05)
    assert saturated.outcome == "inconclusive" and "maximum" in saturated.warnings[-1]


def test_strata_decide_on_the_hardest_or_the_suspects():
    # the owner's architecture scores higher than the others: a pooled null would be too lenient for it
    rng = np.random.default_rng(4)
    own, other = 0.6 + 0.05 * rng.standard_normal(40), 0.2 + 0.05 * rng.standard_normal(40)
    null = Null(np.r_[own, other], ("lenet",) * 40 + ("mlp",) * 40, Scale("unit"))
    s = 0.62
    assert null.p_value(s) > 0.2  # unknown suspect: the hardest stratum (lenet) decides
    assert null.p_value(s, "lenet") == null.p_value(s)
    assert null.p_value(s, "mlp") < 0.05
    v = _v(s, null, owner_stratum="cnn")
    assert v.evidence["decided_on"] == "lenet" and set(v.evidence["strata"]) == {"(all)", "lenet", "mlp"}
    assert any("owner's architecture" in w for w in v.warnings)


def test_rate_null_is_a_beta_binomial_with_the_spread_of_clean_models():
    # clean models that never match: a fully matched key of 100 inputs is overwhelming evidence
    zero = rate_null(np.zeros(19), 100)
    assert zero.p_value(1.0) < 1e-6 and zero.p_value(0.0) == 1.0
    # clean models that match a lot and vary: the same key is much weaker evidence, yet valid
    spread = rate_null(np.array([0.1, 0.7, 0.3, 0.5, 0.05, 0.68]), 100)
    assert spread.p_value(1.0) > zero.p_value(1.0) * 1e3
    assert spread.p_value(0.7) > 0.05


def test_exact_binomial_decision():
    v = decide_binomial(0.5, 100, 0.1, 0.01, queries=100, scheme="trigger-set")
    assert v.related and v.method.startswith("exact binomial") and v.queries == 100 and v.p_value < 1e-6
    assert binomial_p(v.threshold, 100, 0.1) > 0.01 >= binomial_p(v.threshold + 0.01, 100, 0.1)
    assert decide_binomial(0.1, 100, 0.1, 0.01, queries=100, scheme="t").outcome == "not related"
    assert decide_binomial(1.0, 10, 0.5, 1e-4, queries=10, scheme="t").outcome == "inconclusive"


def test_combine_p_values():
    assert combine([0.01, 0.01, 0.01], "fisher") < 0.001
    assert combine([0.5, 0.6, 0.4], "fisher") > 0.3
    assert combine([0.001, 0.5, 0.9]) == pytest.approx(0.003)  # holm/bonferroni by default
    with pytest.raises(ConfigError, match="unknown combination"):
        combine([0.1], "average")


def test_serfling_radius_shrinks_to_zero():
    r = [serfling_radius(n, 100, looks=10, delta=0.01) for n in (10, 50, 90, 100)]
    assert r[0] > r[1] > r[2] > r[3] == 0.0
    assert serfling_radius(0, 100, 10, 0.01) == math.inf


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.integers(0, 10_000))
def test_serfling_interval_covers_the_population_mean(seed):
    # the bound is conservative: over many draws the interval misses far less often than delta
    rng = np.random.default_rng(seed)
    pop = rng.random(100) < rng.random()
    order = rng.permutation(100)
    for n in (10, 30, 60):
        mean = pop[order[:n]].mean()
        assert abs(mean - pop.mean()) <= serfling_radius(n, 100, looks=3, delta=0.05)


@given(labels, labels)
def test_mutual_info_matches_scikit_learn(u, v):
    from sklearn.metrics import normalized_mutual_info_score

    n = min(len(u), len(v))
    expected = 1 - normalized_mutual_info_score(u[:n], v[:n], average_method="min")
    assert DISTANCES.make("mutual-info")(torch.tensor(u[:n]), torch.tensor(v[:n])) == pytest.approx(expected, abs=1e-9)
