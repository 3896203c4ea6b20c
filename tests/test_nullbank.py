"""The null bank: independent models trained together, each as if alone, stratified by architecture, cached;
verdicts against it are distribution-free where the bank allows, and copies are refused as nulls."""

from __future__ import annotations

import copy

import pytest
import torch

import modelprint as mp
from modelprint import data, nullbank
from modelprint.decide import needed
from modelprint.errors import ConfigError
from modelprint.lineage.train import accuracy, fit
from modelprint.nets import make_net

ALPHA = 0.5  # needed(0.5) = 7: 7 models of each architecture keep the test small
PER_ARCH = needed(ALPHA)


@pytest.fixture(autouse=True, scope="module")
def short_training():
    """150 optimiser steps per bank model instead of 1200: enough to learn 300 digits well above chance."""
    with pytest.MonkeyPatch.context() as mp_:
        mp_.setattr(nullbank, "STEPS", 150)
        yield


@pytest.fixture(scope="module")
def small():
    """300 training digits, the rest of the train split as held-out inputs."""
    ds = data.load("digits", "train")
    return ds.x[:300], ds.y[:300], ds.x[300:], ds.y[300:]


@pytest.fixture(scope="module")
def owner(small):
    x, y, _, _ = small
    torch.manual_seed(123)
    return fit(make_net("mlp", (1, 8, 8), 10), x, y, epochs=30, lr=0.01, seed=123).eval()


@pytest.fixture(scope="module")
def bank(small, tmp_path_factory):
    x, y, _, _ = small
    cache = tmp_path_factory.mktemp("bank")
    return nullbank.build((x, y), ALPHA, "mlp", cache_dir=cache), cache


def test_plan_covers_the_owner_and_other_architectures():
    plan = nullbank.plan(0.01, "lenet", (1, 8, 8))
    archs = [a for a, _ in plan]
    assert archs.count("lenet") == archs.count("mlp") == archs.count("cnn") == 459 and len(plan) == 1377
    assert len({s for _, s in plan}) == len(plan)  # every model its own seed
    assert [a for a, _ in nullbank.plan(0.05, "mlp", (64,), own_only=True)] == ["mlp"] * 90
    with pytest.raises(ConfigError, match="cannot rebuild"):
        nullbank.plan(0.05, "MyNet", (64,), own_only=True)


def test_ensemble_models_are_trained_and_independent(bank, small):
    models, _ = bank
    _, _, xt, yt = small
    assert [m.arch for m in models].count("mlp") == PER_ARCH and len(models) == 3 * PER_ARCH  # as many of each
    for m in models:
        assert accuracy(m.module, xt, yt) > 0.6, m.name  # chance is 0.1
    w = [m.module.state_dict() for m in models if m.arch == "mlp"]
    first = next(iter(w[0]))
    assert not torch.equal(w[0][first], w[1][first])


def test_ensemble_training_is_deterministic(small):
    x, y, _, _ = small
    a = nullbank.train_ensemble("mlp", x, y, [5, 6], 10, steps=50)
    b = nullbank.train_ensemble("mlp", x, y, [6], 10, steps=50)
    # each model depends on its own seed only, not on the others it trained with
    for (k, va), vb in zip(a[1].state_dict().items(), b[0].state_dict().values(), strict=True):
        assert torch.allclose(va, vb, atol=1e-5), k


def test_auto_calibration_is_stratified_and_decides(owner, small, bank):
    x, y, xt, yt = small
    _, cache = bank
    fp = mp.extract(owner, "AKH", (xt, yt), budget=60, seed=0)
    fp = mp.calibrate(fp, "auto", ALPHA, data=(x, y), cache_dir=cache)  # the bank comes from the cache
    assert fp.owner_arch == "mlp" and fp.null_strata.count("mlp") == PER_ARCH and len(fp.null_scores) == 3 * PER_ARCH
    v = mp.verify(fp, copy.deepcopy(owner))
    assert v.related and v.p_value <= ALPHA / 10 and v.evidence["decided_on"] == "mlp"
    assert set(v.evidence["strata"]) >= {"(all)", "mlp"} and not v.warnings


def test_a_copy_is_refused_as_a_null(owner, small):
    _, _, xt, yt = small
    for scheme in ("AKH", "SAC-w"):
        fp = mp.extract(owner, scheme, (xt, yt), budget=20, seed=0)
        with pytest.raises(ConfigError, match="owner"):
            mp.calibrate(fp, [copy.deepcopy(owner), make_net("mlp", (1, 8, 8), 10)])


def test_a_fingerprint_of_tensors_needs_data_for_its_bank(owner, small):
    _, _, xt, yt = small
    fp = mp.extract(owner, "AKH", (xt, yt), budget=20, seed=0)
    with pytest.raises(ConfigError, match="pass data"):
        mp.calibrate(fp, "auto", ALPHA)


class Foreign(torch.nn.Module):
    """A user's own network that modelprint cannot rebuild: LayerNorm, GELU, a buffer."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(64, 48),
            torch.nn.LayerNorm(48),
            torch.nn.GELU(),
            torch.nn.Linear(48, 10),
        )
        self.register_buffer("scale", torch.tensor(1.0))

    def forward(self, x):
        return self.body(x) * self.scale


def test_a_foreign_owner_gets_a_bank_of_other_architectures_and_a_warning(small, tmp_path):
    x, y, xt, yt = small
    torch.manual_seed(7)
    owner = fit(Foreign(), x, y, epochs=30, lr=0.01, seed=7).eval()
    fp = mp.extract(owner, "AKH", (xt, yt), budget=60, seed=0)
    fp = mp.calibrate(fp, "auto", ALPHA, data=(x, y), cache_dir=tmp_path)
    assert set(fp.null_strata) == {"mlp", "lenet", "cnn"} and len(fp.null_scores) == 3 * PER_ARCH
    v = mp.verify(fp, copy.deepcopy(owner))
    assert v.related and v.p_value <= ALPHA / 10
    assert any("architecture" in w for w in v.warnings)  # the null lacks the owner's own architecture
    other = nullbank.build((x, y), ALPHA, None, count=1, seed_base=12_345, cache_dir=tmp_path)[0]
    assert not mp.verify(fp, other.module).related
