"""One door for every kind of evidence: any evidence file loads by its header, calibrates and verifies through the
same calls, on the command line and in the registry; options a kind does not take are refused by name."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from modelprint import evidence
from modelprint import watermark as wm
from modelprint.errors import ConfigError, FileFormatError
from modelprint.fingerprint import extract
from modelprint.fingerprint.weights import WeightsFingerprint
from modelprint.io import save_model
from modelprint.registry import Registry

from .test_cli import cli


@pytest.fixture(scope="module")
def files(source, marked, tmp_path_factory):
    d = tmp_path_factory.mktemp("evidence")
    model, key = marked
    extract(source.module, "AKH", "digits", 30).save(d / "owner.fp")
    WeightsFingerprint.of(source.module).save(d / "owner.wfp")
    key.save(d / "owner.key")
    save_model(model, d / "marked")
    return d


def test_every_kind_loads_by_its_header(files, tmp_path):
    kinds = {name: evidence.kind(evidence.load(files / name)) for name in ("owner.fp", "owner.wfp", "owner.key")}
    assert kinds == {"owner.fp": "fingerprint", "owner.wfp": "weights fingerprint", "owner.key": "watermark key"}
    save_file({"x": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(FileFormatError, match="other.safetensors: not a modelprint"):
        evidence.load(tmp_path / "other.safetensors")


def test_a_key_verifies_through_the_same_call_and_refuses_fingerprint_options(files, marked, source):
    model, key = marked
    v = evidence.verify(evidence.load(files / "owner.key"), model)
    assert v.related and v.p_value == wm.verify(key, model).p_value
    assert not evidence.verify(key, source.module).related
    with pytest.raises(ConfigError, match="sequential: not an option of a watermark key"):
        evidence.verify(key, model, sequential=True)


def test_the_command_line_and_the_registry_take_any_evidence(files, source, zoo_cache, tmp_path):
    key, marked_model = str(files / "owner.key"), str(files / "marked")
    assert cli("verify", key, marked_model).returncode == 0
    assert cli("verify", key, "train(cnn,digits,0)", "--cache", str(zoo_cache)).returncode == 1
    refused = cli("verify", key, marked_model, "--sequential")
    assert refused.returncode == 2 and "not an option of a watermark key" in refused.stderr
    db = tmp_path / "r.db"
    assert cli("registry", "add", key, "--name", "owner", "--db", str(db)).returncode == 0
    assert Registry(db).entries()[0]["fingerprints"] == 1
    found = cli("registry", "search", marked_model, "--db", str(db), "--json")
    assert found.returncode == 0 and '"related": true' in found.stdout, found.stdout + found.stderr
