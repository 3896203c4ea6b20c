"""Public fingerprint release: every Merkle path leads to its root and a changed one does not; the commitment hides
the fingerprint (salted: the same fingerprint commits to different roots); an opening that changes a query, an
answer or the committed null is refused; a partial opening must open what the checker's challenge draws; a copy of
the owner is related and an independent model is not, from Python and from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import modelprint as mp
from modelprint import commitment as cm
from modelprint.errors import ConfigError, FileFormatError

from .test_cli import cli

CHALLENGE = "checker 2026-12-02"
# agreement rates of independent models on the AKH queries. They reach 0.95 because the challenge draws 40 of the
# 60 queries from a salted root, so a different subset each run: an independent CNN agreeing on 0.68 of all 60
# (two threads) reached 0.78 on some subsets, p 0.055 against nulls ending at 0.75 (measured over 40 commitments;
# against these, its smallest p was 0.44)
NULLS = np.linspace(0.5, 0.95, 39)


@pytest.fixture(scope="module")
def committed(source):
    fp = mp.calibrate(mp.extract(source.module, "AKH", "digits", 60), null_scores=NULLS, target_fpr=0.05)
    return cm.commit(fp)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 9])
def test_every_path_climbs_to_the_root_and_a_changed_one_does_not(n):
    leaves = [cm.leaf(bytes(32), bytes([i])) for i in range(n + 1)]
    tree = cm.levels(leaves)
    for i in range(n + 1):
        assert cm.climb(leaves[i], i, cm.path(tree, i), n + 1) == tree[-1][0]
        assert cm.climb(leaves[(i + 1) % (n + 1)], i, cm.path(tree, i), n + 1) != tree[-1][0]
        assert cm.climb(leaves[i], i, [*cm.path(tree, i), leaves[0]], n + 1) != tree[-1][0]  # a path too long


def test_the_commitment_hides_the_fingerprint_and_survives_its_files(committed, tmp_path):
    again = cm.commit(committed.fingerprint)
    assert again.commitment.root != committed.commitment.root  # fresh salts: the root says nothing repeatable
    public = committed.commitment.save(tmp_path / "c.commitment")
    assert public.stat().st_size < 1000 and cm.Commitment.load(public) == committed.commitment
    loaded = cm.Committed.load(committed.save(tmp_path / "c.secret"))
    assert loaded.commitment == committed.commitment
    raw = bytearray(public.read_bytes())
    raw[-3] ^= 1  # one bit of the root
    (tmp_path / "bad.commitment").write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match="bad.commitment"):
        cm.Commitment.load(tmp_path / "bad.commitment")


def test_a_copy_is_related_and_an_independent_model_is_not(committed, zoo, source, tmp_path):
    public = committed.commitment
    full = cm.Opening.load(committed.open().save(tmp_path / "full.open"))
    copy = cm.check(public, full, source.module)
    assert copy.outcome == "related" and copy.p_value <= 0.005 and copy.evidence["opened"] == 60, copy.summary()
    other = cm.check(public, full, zoo("train(cnn,digits,3)").module)
    assert other.outcome == "not related" and other.p_value > 0.1, other.summary()
    some = committed.open(40, CHALLENGE)
    assert some.indices == cm.challenged(public.root, CHALLENGE, 40, 60) != committed.open(40, "another").indices
    copy = cm.check(public, some, source.module, challenge=CHALLENGE)
    # 1/40 at best with 39 nulls, a little more as a null near 0.95 can agree on all 40 drawn queries (at most
    # 0.0264 over 40 commitments)
    assert copy.outcome == "related" and copy.p_value <= 0.03 and copy.queries == 40, copy.summary()
    other = cm.check(public, some, zoo("train(cnn,digits,3)").module, challenge=CHALLENGE)
    assert other.outcome == "not related" and other.p_value > 0.1, other.summary()


def test_an_opening_that_changes_anything_is_refused(committed, source):
    public, some = committed.commitment, committed.open(40, CHALLENGE)
    with pytest.raises(ConfigError, match="challenge"):
        cm.check(public, some, source.module, challenge="another")  # the owner chose the queries
    with pytest.raises(ConfigError, match="challenge"):
        cm.check(public, some, source.module)
    answers = some.responses.clone()
    answers[0] = (answers[0] + 1) % 10
    statement = json.loads(some.statement)
    statement["header"]["target_fpr"] = 0.5  # a laxer rule after the fact
    forged = [
        cm.Opening(**{**some.__dict__, "responses": answers}),
        cm.Opening(**{**some.__dict__, "queries": some.queries + 0.01}),
        cm.Opening(**{**some.__dict__, "tensors": {"null_scores": torch.zeros(39, dtype=torch.float64)}}),
        cm.Opening(**{**some.__dict__, "statement": json.dumps(statement, sort_keys=True)}),
        cm.Opening(**{**some.__dict__, "indices": [i + 1 for i in some.indices]}),
    ]
    for opening in forged:
        assert not opening.proves(public)
        with pytest.raises(ConfigError, match="does not match"):
            cm.check(public, opening, source.module, challenge=CHALLENGE)
    with pytest.raises(ConfigError, match="calibrated"):
        cm.commit(mp.extract(source.module, "AKH", "digits", 20))
    with pytest.raises(ConfigError, match="challenge"):
        committed.open(10)


def test_commitment_commands(committed, zoo_cache, tmp_path):
    fp = committed.fingerprint.save(tmp_path / "akh.fp")
    public, secret, opening = tmp_path / "akh.commitment", tmp_path / "akh.secret", tmp_path / "akh.open"
    made = cli("commitment", "make", str(fp), "-o", str(public), "--secret", str(secret))
    assert made.returncode == 0 and public.exists() and secret.exists(), made.stderr
    opened = cli("commitment", "open", str(secret), "-o", str(opening), "-k", "40", "--challenge", CHALLENGE)
    assert opened.returncode == 0 and "40 of 60" in " ".join(opened.stdout.split()), opened.stderr
    check = ["commitment", "check", str(public), str(opening)]
    r = cli(*check, "train(cnn,digits,0)", "--challenge", CHALLENGE, "--json", "--cache", str(zoo_cache))
    assert r.returncode == 0 and json.loads(r.stdout)["outcome"] == "related", r.stdout + r.stderr
    wrong = cli(*check, "train(cnn,digits,0)", "--challenge", "another", "--cache", str(zoo_cache))
    assert wrong.returncode == 2 and "challenge" in wrong.stderr and "Traceback" not in wrong.stderr
