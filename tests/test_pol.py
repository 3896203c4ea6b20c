"""Proof of learning: an honest trace is valid for its model and its file is checked; a trace for another model, a
trace with a changed checkpoint or batch, and a trace made up after the fact for a stolen model are invalid, from
Python and from the command line."""

from __future__ import annotations

import json

import pytest
import torch

from modelprint import pol
from modelprint.errors import FileFormatError

from .test_cli import cli


@pytest.fixture(scope="module")
def trained():
    return pol.record("mlp", "digits", epochs=3, k=5)


def test_an_honest_trace_is_valid_and_survives_its_file(trained, tmp_path):
    model, trace = trained
    v = pol.verify(pol.Trace.load(trace.save(tmp_path / "t.pol")), model)
    assert v.outcome == "valid" and v.related and not v.warnings, v.summary()
    assert v.evidence["re_executed"] >= 3 and v.evidence["worst_distance"] <= 1e-6  # one or more per epoch
    raw = bytearray((tmp_path / "t.pol").read_bytes())
    raw[-7] ^= 1
    (tmp_path / "bad.pol").write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match="bad.pol"):
        pol.Trace.load(tmp_path / "bad.pol")


def test_forged_traces_are_invalid(trained):
    model, trace = trained
    other, _ = pol.record("mlp", "digits", epochs=1, k=5, seed=1)
    assert pol.verify(trace, other).outcome == "invalid"  # the trace of another model
    spoofed = pol.verify(pol.spoof(model, k=5), model)  # interpolated from a fresh start to the stolen weights
    assert spoofed.outcome == "invalid" and spoofed.evidence["worst_distance"] > 0.3, spoofed.summary()
    assert any("land elsewhere" in w for w in spoofed.warnings)
    last = len(trace.checkpoints) - 1  # (the last checkpoint is the model's own weights: tested above)
    for s in (1, last // 2, last - 1):  # a changed checkpoint is found where its segments are re-executed
        checkpoints = [dict(c) for c in trace.checkpoints]
        checkpoints[s] = {k: v + 0.01 if v.is_floating_point() else v for k, v in checkpoints[s].items()}
        assert pol.verify(pol.Trace(**{**trace.__dict__, "checkpoints": checkpoints}), model, top=100).outcome == (
            "invalid"
        ), s
    batches = trace.batches.clone()
    batches[0] = torch.flip(batches[0], (0,)) + 1  # other examples in the first step
    assert pol.verify(pol.Trace(**{**trace.__dict__, "batches": batches}), model, top=100).outcome == "invalid"


def test_pol_commands(tmp_path):
    out, trace = tmp_path / "model", tmp_path / "model.pol"
    made = cli("pol", "record", "mlp", "-o", str(out), "--trace", str(trace), "--epochs", "2", "--every", "5")
    assert made.returncode == 0 and "test accuracy" in " ".join(made.stdout.split()), made.stderr
    r = cli("pol", "verify", str(trace), str(out), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["outcome"] == "valid", r.stdout + r.stderr
    bad = cli("pol", "verify", str(tmp_path / "none.pol"), str(out))
    assert bad.returncode == 2 and "none.pol" in bad.stderr and "Traceback" not in bad.stderr
