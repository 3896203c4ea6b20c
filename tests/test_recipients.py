"""Per-recipient copies: a single leaked copy names its recipient, an average of two copies names both, an
independent model and the unmarked source name nobody; the key file is checked; from Python and the command line."""

from __future__ import annotations

import json

import pytest

from modelprint.errors import ConfigError, FileFormatError
from modelprint.watermark.recipients import RecipientKey, average, distribute, trace

from .test_cli import cli

NAMES = ["alice", "bob", "carol"]


@pytest.fixture(scope="module")
def copies(source):
    return distribute(source.module, NAMES, bits=128, epochs=3)


def accused(rows) -> list[str]:
    return sorted(r["recipient"] for r in rows if r["accused"])


def test_leaks_and_collusions_name_their_recipients_and_nobody_else(copies, source, zoo, tmp_path):
    marked, key = copies
    key = RecipientKey.load(key.save(tmp_path / "r.key"))
    for name, copy in zip(NAMES, marked, strict=True):
        rows = trace(key, copy)
        assert accused(rows) == [name] and rows[0]["p_value"] <= 1e-3, rows
    assert accused(trace(key, average(marked[:2]))) == ["alice", "bob"]
    for innocent in (source.module, zoo("train(cnn,digits,3)").module):
        assert accused(trace(key, innocent)) == []
    with pytest.raises(ConfigError, match="each named once"):
        distribute(source.module, ["alice", "alice"])
    raw = bytearray((tmp_path / "r.key").read_bytes())
    raw[-9] ^= 1
    (tmp_path / "bad.key").write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match="bad.key"):
        RecipientKey.load(tmp_path / "bad.key")


def test_distribute_and_trace_commands(zoo_cache, tmp_path):
    out, key = tmp_path / "copies", tmp_path / "r.key"
    r = cli("watermark", "distribute", "train(mlp,digits,0)", "-r", "alice", "-r", "bob", "-o", str(out), "--key",
            str(key), "--bits", "64", "--epochs", "2", "--cache", str(zoo_cache))  # fmt: skip
    assert r.returncode == 0 and (out / "bob").exists(), r.stderr
    found = cli("watermark", "trace", str(key), str(out / "bob"), "--json")
    assert found.returncode == 0 and [x["recipient"] for x in json.loads(found.stdout) if x["accused"]] == ["bob"]
    nobody = cli("watermark", "trace", str(key), "train(mlp,digits,1)", "--cache", str(zoo_cache))
    assert nobody.returncode == 1, nobody.stdout + nobody.stderr
