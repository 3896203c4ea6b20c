"""Distances' properties, calibrated thresholds that hold their false-positive rate, and the sequential bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modelprint.decide import BinomialNull, EmpiricalNull, combine, decide, serfling_radius
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


@pytest.mark.parametrize("n_null", [12, 40, 400])
def test_calibrated_threshold_holds_its_fpr(n_null):
    # the threshold is a random variable of the null sample; its FPR, averaged over samples, is the target
    rng = np.random.default_rng(n_null)
    alpha, fprs = 0.05, []
    for _ in range(200):
        null = EmpiricalNull(rng.normal(0.5, 0.1, n_null))
        fprs.append(np.mean(rng.normal(0.5, 0.1, 2000) > null.threshold(alpha)))
    sem = np.std(fprs) / math.sqrt(len(fprs))
    assert abs(np.mean(fprs) - alpha) < 4 * sem + 0.005, (np.mean(fprs), sem)


def test_threshold_and_p_value_agree():
    rng = np.random.default_rng(1)
    for n in (5, 50, 300):
        null = EmpiricalNull(rng.normal(size=n))
        tau = null.threshold(0.05)
        for s in np.linspace(-3, 4, 57):
            assert (null.p_value(s) <= 0.05) == (s > tau), (n, s, tau)
    assert EmpiricalNull(np.zeros(300)).method == "empirical"
    assert EmpiricalNull(np.zeros(10)).method == "t-tail"


def test_empirical_p_value_and_degenerate_nulls():
    null = EmpiricalNull(np.arange(300.0))
    assert null.p_value(299.5) == pytest.approx(1 / 301)
    assert null.p_value(-1) == 1.0
    same = EmpiricalNull(np.full(5, 0.9))
    assert same.p_value(0.9) == pytest.approx(0.5) and same.p_value(0.95) < 1e-6
    with pytest.raises(ConfigError, match="at least 2"):
        EmpiricalNull(np.array([0.5]))
    with pytest.raises(ConfigError, match="NaN"):
        EmpiricalNull(np.array([0.5, np.nan]))
    with pytest.raises(ConfigError, match="false-positive rate"):
        null.threshold(1.5)


def test_binomial_null():
    null = BinomialNull(n=100, p=0.1)
    assert null.p_value(0.1) > 0.4 and null.p_value(0.5) < 1e-6
    tau = null.threshold(0.01)
    assert null.p_value(tau + 0.01) <= 0.01 < null.p_value(tau)
    v = decide(0.5, null, 0.01, queries=100, scheme="trigger-set")
    assert v.related and v.method == "binomial" and v.queries == 100


def test_combine_p_values():
    assert combine([0.01, 0.01, 0.01]) < 0.001
    assert combine([0.5, 0.6, 0.4]) > 0.3


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
