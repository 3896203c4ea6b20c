"""Integrity seals: exact copies and re-exports pass, a single changed weight fails, the seal file rejects
tampering, and the command line answers identical (0) or modified (1)."""

from __future__ import annotations

import copy

import pytest
import torch

from modelprint import integrity
from modelprint.errors import ConfigError, FileFormatError
from modelprint.fingerprint.crafted import sensitivity
from modelprint.io import load_model, save_model

from .test_cli import cli


@pytest.fixture(scope="module")
def sealed(source):
    return integrity.seal(source.module, "digits", budget=10, seed=0)


def edited(module: torch.nn.Module, layer: int, amount: float) -> torch.nn.Module:
    """A copy with one weight of the ``layer``-th weight tensor moved by ``amount`` of that tensor's largest."""
    out = copy.deepcopy(module)
    w = [p for p in out.parameters() if p.ndim > 1][layer]
    with torch.no_grad():
        w.view(-1)[0] += amount * w.abs().max()
    return out


def test_sensitive_samples_are_more_sensitive_than_the_inputs_they_grew_from(source, sealed):
    from modelprint import data

    x = data.load("digits", "test").x[:200].float()
    with torch.no_grad():
        natural = sensitivity(source.module, x, source.module(x).argmax(1))[0]
        grown = sensitivity(source.module, sealed.inputs, sealed.labels)[0]
    assert grown.median() > 3 * natural.median()


def test_copies_and_re_exports_are_identical_and_one_changed_weight_is_not(source, sealed, tmp_path):
    save_model(source.module, tmp_path / "copy")
    torch.jit.trace(source.module, sealed.inputs[:2]).save(str(tmp_path / "ts.pt"))
    for same in (copy.deepcopy(source.module), load_model(tmp_path / "copy"), load_model(tmp_path / "ts.pt")):
        v = integrity.check(sealed, same)
        assert v.outcome == "identical" and v.related and v.queries == 10
        assert v.evidence["largest_difference"] < integrity.TOLERANCE / 10
    for layer in (0, 1):  # the first two weight tensors (rates over every layer: benchmarks/integrity.py)
        v = integrity.check(sealed, edited(source.module, layer, 0.01))
        assert v.outcome == "modified" and not v.related and v.evidence["mismatched_samples"]


class Nudged(torch.nn.Module):
    """The source with each input's least likely logit raised by ``amount``."""

    def __init__(self, module: torch.nn.Module, amount: float):
        super().__init__()
        self.module, self.amount = module, amount

    def forward(self, x):
        out = self.module(x).clone()
        out[torch.arange(len(out)), out.argmin(1)] += self.amount
        return out


def test_a_change_hidden_in_small_probabilities_is_caught_on_log_probabilities(source, sealed):
    # each sealed sample's least likely class (probability ~1e-8 on a trained CNN) nudged by 0.01 in logit: its
    # probability moves by ~1% of itself, far below 1e-4 in absolute terms, which a comparison of probabilities
    # would call identical. (One class's logit nudged on every input was not: the class least likely overall still
    # reached 2e-2 on some sample on another machine.)
    assert sealed.probs.amin(1).max() < 1e-4
    nudged = Nudged(source.module, 0.01).eval()
    with torch.no_grad():
        moved = (torch.softmax(nudged(sealed.inputs), 1).double() - sealed.probs).abs().max()
    assert moved < integrity.TOLERANCE / 10
    v = integrity.check(sealed, nudged)
    assert v.outcome == "modified" and v.evidence["compared"].startswith("log-probabilities")
    assert v.evidence["largest_difference"] > 50 * integrity.TOLERANCE


def test_a_labels_only_suspect_is_compared_on_labels(source, sealed):
    v = integrity.check(sealed, lambda x: source.module(x).argmax(1))
    assert v.outcome == "identical" and v.evidence["compared"] == "labels"
    flipped = integrity.check(sealed, lambda x: (source.module(x).argmax(1) + 1) % 10)
    assert flipped.outcome == "modified" and flipped.score == 0.0


def test_the_seal_file_round_trips_and_rejects_tampering(sealed, tmp_path):
    path = sealed.save(tmp_path / "owner.seal")
    back = integrity.Seal.load(path)
    assert torch.equal(back.inputs, sealed.inputs) and torch.equal(back.probs, sealed.probs)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    (tmp_path / "bad.seal").write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match="bad.seal"):
        integrity.Seal.load(tmp_path / "bad.seal")
    with pytest.raises(ConfigError, match="torch module"):
        integrity.seal(lambda x: x, "digits")


def test_the_command_line_seals_and_checks(source, zoo_cache, tmp_path):
    seal, cache = str(tmp_path / "owner.seal"), ["--cache", str(zoo_cache)]
    assert cli("integrity", "seal", "train(cnn,digits,0)", "-o", seal, "--budget", "8", *cache).returncode == 0
    assert cli("integrity", "check", seal, "train(cnn,digits,0)", *cache).returncode == 0
    assert cli("verify", seal, "train(cnn,digits,0)->quantize(fp16)", *cache).returncode == 1  # any evidence file
    refused = cli("calibrate", seal, "--null", "train(mlp,digits,1)", *cache)
    assert refused.returncode == 2 and "needs no calibration" in refused.stderr
