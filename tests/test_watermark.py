"""Watermarks: a marked model verifies with a tiny p-value, unrelated models do not, embedding costs little
accuracy, keys round-trip and reject tampering, verification reads hard labels only."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from modelprint import data
from modelprint import watermark as wm
from modelprint.errors import ConfigError, FileFormatError
from modelprint.lineage.train import accuracy


@pytest.fixture(scope="session")
def marked(source):
    return wm.embed(source.module, "trigger-set(size=50)", "digits", key_seed=0, epochs=10)


@pytest.fixture(scope="session")
def clean(zoo):
    return [zoo(f"train({a},digits,{s})").module for a in ("lenet", "mlp") for s in (3, 4)]


def test_trigger_set_verifies_and_unrelated_models_do_not(marked, source, clean):
    model, key = marked
    v = wm.verify(key, model)
    assert v.related and v.p_value < 1e-6 and v.method == "binomial" and v.queries == 50
    for m in [source.module, *clean]:  # the unmarked original and independent models
        u = wm.verify(key, m)
        assert not u.related and u.p_value > 0.01


def test_embedding_costs_at_most_a_point_of_accuracy(marked, source):
    test = data.load("digits", "test")
    assert accuracy(source.module, test.x, test.y) - accuracy(marked[0], test.x, test.y) <= 0.01


def test_verification_uses_hard_labels_only(marked):
    model, key = marked
    asked = []

    def api(x):
        asked.append(len(x))
        return model(x).argmax(1)

    assert wm.verify(key, api).related and sum(asked) == len(key.labels)


def test_calibrated_scheme_needs_clean_models(source, clean):
    model, key = wm.embed(source.module, "noise(size=40)", "digits", key_seed=1, epochs=10)
    with pytest.raises(ConfigError, match="calibrate"):
        wm.verify(key, model)
    key = wm.calibrate(key, clean[:3])
    assert wm.verify(key, model).related and not wm.verify(key, clean[3]).related


def test_key_round_trips_and_rejects_tampering(marked, tmp_path):
    _, key = marked
    path = key.save(tmp_path / "owner.key")
    loaded = wm.Key.load(path)
    loaded.save(tmp_path / "again.key")
    assert (tmp_path / "again.key").read_bytes() == path.read_bytes()
    assert torch.equal(loaded.labels, key.labels) and loaded.scheme == key.scheme
    with safe_open(str(path), "pt") as f:
        meta, ts = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    ts["labels"] = (ts["labels"] + 1) % 10
    save_file(ts, str(tmp_path / "tampered.key"), metadata=meta)
    with pytest.raises(FileFormatError, match="checksum mismatch"):
        wm.Key.load(tmp_path / "tampered.key")
    header = json.loads(meta["modelprint"])
    assert header["format"] == "modelprint-watermark-key" and header["scheme"] == "trigger-set(size=50)"
    with pytest.raises(FileFormatError, match="not a modelprint watermark key"):
        wm.Key.load(save_file({"x": torch.zeros(1)}, str(tmp_path / "f.key")) or tmp_path / "f.key")


def test_unknown_scheme():
    with pytest.raises(ConfigError, match="unknown watermark"):
        wm.make_watermark("nosuch")
