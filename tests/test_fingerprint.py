"""Fingerprints: every named scheme tells a copy and a fine-tuned copy from independent models; the file
round-trips and rejects tampering; budgets and access restrictions hold."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import modelprint as mp
from modelprint.errors import AccessError, BudgetExceededError, ConfigError, FileFormatError
from modelprint.fingerprint import NAMED

from .conftest import SOURCE

BUDGET = 40
OTHER_ARCHS = ("lenet", "mlp")


@pytest.fixture(scope="session")
def finetuned(zoo):
    return zoo(f"{SOURCE}->finetune(1)").module


@pytest.fixture(scope="session")
def independents(zoo):
    return [zoo(f"train({a},digits,3)").module for a in OTHER_ARCHS]


@pytest.fixture(scope="session")
def nulls(zoo):
    return [zoo(f"train({a},digits,{s})").module for a in OTHER_ARCHS for s in (4, 5)]


@pytest.fixture(scope="session")
def fingerprints(source, zoo_cache):
    cache: dict[str, mp.Fingerprint] = {}

    def get(scheme: str, budget: int = BUDGET) -> mp.Fingerprint:
        if (scheme, budget) not in cache:
            cache[scheme, budget] = mp.extract(source.module, scheme, "digits", budget, seed=0, cache_dir=zoo_cache)
        return cache[scheme, budget]

    return get


@pytest.fixture(scope="session")
def akh(fingerprints, nulls):
    return mp.calibrate(fingerprints("AKH"), nulls)


# Random carries little evidence on digits (next test); MetaV-datafree's verifier, learned on noise queries, does
# not generalise at 40 queries (an independent LeNet scored 0.97 against a copy's 1.0 with one thread; measured)
# TAFA solves a linear program per step and query: tested on the MLP, more cheaply, in test_literature
@pytest.mark.parametrize("scheme", [n for n in NAMED if n not in ("Random", "MetaV-datafree", "TAFA")])
def test_named_scheme_tells_copies_from_independent_models(scheme, fingerprints, source, finetuned, independents):
    # FBI draws its queries from the most disputed fifth of the pool: at 40 of ~90 on easy digits, most are inputs
    # every model gets right (the paper's budgets are 100 and more)
    budget = 100 if scheme == "FBI" else BUDGET
    fp = fingerprints(scheme, budget)
    assert fp.budget == len(fp.queries) == budget
    copy_score = mp.score(fp, copy.deepcopy(source.module))
    related = mp.score(fp, finetuned)
    unrelated = [mp.score(fp, m) for m in independents]
    assert copy_score == pytest.approx(1.0, abs=1e-6)
    # distances differ in scale (SAC's mean absolute difference of correlations is ~0.09 between independents)
    assert copy_score > max(unrelated) + 0.03, (copy_score, unrelated)
    # ModelDiff's decision distance vectors barely move at 40 queries; UAP-shift, the measured negative result, put
    # a fine-tuned copy at 0.14 and an independent LeNet at 0.29 with one thread; UAP's encoder, learnt from 8
    # models at 40 queries, put it at 0.02 and an independent LeNet at 0.51 with one thread (the generalization
    # benchmark measures both at their budgets): near-ties or worse, not tests
    if scheme not in ("ModelDiff", "UAP-shift", "UAP"):
        assert related > max(unrelated), (related, unrelated)


def test_random_inputs_carry_little_evidence_on_an_easy_task(fingerprints, source, independents):
    # the baseline: nearly every model agrees on natural digits, so independent models look like copies
    fp = fingerprints("Random")
    assert mp.score(fp, source.module) == 1.0
    assert min(mp.score(fp, m) for m in independents) >= 0.9


def test_verdicts_after_calibration(akh, source, finetuned, independents):
    for m in (source.module, finetuned):
        v = mp.verify(akh, m)
        assert v.related and v.p_value <= akh.target_fpr and v.score > v.threshold and v.queries == BUDGET
    for m in independents:
        v = mp.verify(akh, m)
        assert not v.related and v.p_value > akh.target_fpr
    assert isinstance(v, mp.Verdict) and json.loads(v.to_json())["scheme"] == "AKH"


def test_verify_needs_a_calibrated_fingerprint(fingerprints, source):
    with pytest.raises(ConfigError, match="not calibrated"):
        mp.verify(fingerprints("AKH"), source.module)


def test_sequential_verification_stops_early_and_agrees(fingerprints, nulls, source, independents):
    # 100 queries: with 40, a null model at 0.875 agreement (one thread) leaves the owner's lower bound below the
    # threshold until the last batch; with 100 it clears any threshold up to 0.93 by 90 queries
    fp = mp.calibrate(fingerprints("AKH", 100), nulls)
    full = mp.verify(fp, source.module)
    seq = mp.verify(fp, source.module, sequential=True, batch=10)
    assert full.related and seq.related and seq.queries < fp.budget
    assert seq.evidence["sequential"]["queries_saved"] == fp.budget - seq.queries
    far = mp.verify(fp, independents[1], sequential=True, batch=10)
    assert not far.related and far.queries <= fp.budget


def test_sequential_refuses_schemes_without_per_query_scores(fingerprints, nulls, source):
    fp = mp.calibrate(fingerprints("SAC-w"), nulls)
    with pytest.raises(ConfigError, match="cannot stop early"):
        mp.verify(fp, source.module, sequential=True)


def test_extraction_is_deterministic(source, zoo_cache):
    a = mp.extract(source.module, "ModelDiff", "digits", budget=10, seed=3)
    b = mp.extract(source.module, "ModelDiff", "digits", budget=10, seed=3)
    assert torch.equal(a.queries, b.queries) and torch.equal(a.responses, b.responses)
    assert a.owner_sha256 == b.owner_sha256 and len(a.owner_sha256) == 64


def test_hard_label_scheme_never_asks_for_probabilities(akh, source):
    asked = []

    def api(x):  # a label-only API that records what it is asked
        asked.append(len(x))
        return source.module(x).argmax(1)

    v = mp.verify(akh, api)
    assert v.related and sum(asked) == akh.budget
    white = mp.WhiteBox(source.module)
    mp.verify(akh, white)
    assert white.queries == akh.budget  # through a labels-only view of the module


def test_soft_scheme_on_hard_label_suspect_fails_before_any_query(fingerprints, nulls, source):
    fp = mp.calibrate(fingerprints("SAC-m"), nulls)
    hard = mp.BlackBox(lambda x: source.module(x).argmax(1), "labels", 10, (1, 8, 8))
    with pytest.raises(AccessError, match="needs logits"):
        mp.verify(fp, hard)
    assert hard.queries == 0
    with pytest.raises(AccessError, match="needs logits"):
        mp.make_scheme("SAC-m", access="labels")


def test_budget_is_never_exceeded(akh, source):
    limited = mp.WhiteBox(source.module, budget=akh.budget - 1)
    with pytest.raises(BudgetExceededError):
        mp.verify(akh, limited)
    assert limited.queries == 0


@pytest.mark.parametrize(
    "spec, message",
    [
        ("random+ddv+cosine", "reads pairs"),
        ("adversarial+lime+cosine", "reads groups"),
        ("random+labels+cosine", "compares real"),
        ("random+probs+hamming", "compares categorical"),
        ("random+labels", r"sampler\+representation\+distance"),
        ("nosuch+labels+hamming", "unknown query sampler"),
        ("random(size=3)+labels+hamming", "bad arguments"),
    ],
)
def test_incompatible_combinations_fail_at_construction(spec, message):
    with pytest.raises(ConfigError, match=message):
        mp.make_scheme(spec)


def test_any_compatible_combination_works(source, zoo_cache):
    for spec in ("negative+labels+hamming", "adversarial(eps=0.05)+ddv(hard=true)+mutual-info", "cutmix+probs+l1"):
        fp = mp.extract(source.module, spec, "digits", budget=10)
        assert mp.score(fp, source.module) == pytest.approx(1.0)


def test_data_as_tensors_and_owner_as_plain_module(source):
    from modelprint import data

    ds = data.load("digits", "test")
    plain = torch.nn.Sequential(*copy.deepcopy(source.module).children())  # no modelprint config
    fp = mp.extract(plain, "AKH", (ds.x, ds.y), budget=10)
    assert fp.dataset.startswith("tensors:") and mp.score(fp, source.module) == 1.0
    with pytest.raises(ConfigError, match="even"):
        mp.extract(plain, "ModelDiff", "digits", budget=9)


def test_helpers_built_on_tensors_from_a_black_box_owner(source, finetuned, nulls):
    # an owner seen only through its labels (as an ONNX file or a server is) and data given as tensors: the
    # references train on the tensors' train split, the surrogate extracts from the owner's labels
    from modelprint import data

    ds = data.load("digits", "test")
    asked = []

    def answer(x):
        asked.append(len(x))
        return source.module(x).argmax(1)

    owner = mp.BlackBox(answer, "labels", num_classes=10, input_shape=(1, 8, 8))
    fp = mp.extract(owner, "divergent(references=2,surrogates=1)+labels+hamming", (ds.x, ds.y), budget=40,
                    cache_dir=False)  # fmt: skip
    assert sum(asked) > len(ds.x)  # the surrogate's thief asked the owner, beyond the fingerprint's own queries
    # label agreement with 4 nulls of other architectures moves by 0.3 between machines (0.35-0.75), so the
    # fine-tuned copy is compared with their mean (0.19-0.38 below it over 6 seeds), not their maximum
    nulls = [mp.score(fp, m) for m in nulls]
    assert mp.score(fp, source.module) == 1.0 and mp.score(fp, finetuned) > sum(nulls) / len(nulls)


def test_references_and_surrogates_given_by_the_user(source, finetuned, independents, nulls):
    from modelprint import data

    ds = data.load("digits", "test")
    plain = torch.nn.Sequential(*copy.deepcopy(source.module).children())
    fp = mp.extract(plain, "divergent(references=2,surrogates=1)+labels+hamming", (ds.x, ds.y), budget=20,
                    references=independents, surrogates=[finetuned])  # fmt: skip
    assert mp.score(fp, source.module) == 1.0 and mp.score(fp, finetuned) > max(mp.score(fp, m) for m in nulls)
    with pytest.raises(ConfigError, match="needs 2 surrogates but was given 1"):
        mp.extract(plain, "Divergent", (ds.x, ds.y), budget=20, references=independents, surrogates=[finetuned])


def test_contrast_chooses_blends_the_population_does_not_answer_as_the_owner(source, finetuned, independents):
    # the fine-tuned surrogate follows the owner almost everywhere, so with contrast 0 the blends are chosen
    # nearly at random; a high contrast must choose blends on which the references disagree with the owner
    from modelprint import data

    ds = data.load("digits", "test")

    def reference_agreement(contrast: float) -> float:
        spelled = f"divergent(candidates=20,references=2,surrogates=1,contrast={contrast})+labels+hamming"
        fp = mp.extract(source.module, spelled, (ds.x, ds.y), budget=30, references=independents,
                        surrogates=[finetuned])  # fmt: skip
        own = source.module(fp.queries).argmax(1)
        return float(torch.stack([m(fp.queries).argmax(1) == own for m in independents]).float().mean())

    with torch.no_grad():
        assert reference_agreement(0) > 0.5 and reference_agreement(5) < 0.2
    with pytest.raises(ConfigError, match="contrast of at least 0"):
        mp.extract(source.module, "divergent(references=2,surrogates=1,contrast=-1)+labels+hamming", (ds.x, ds.y),
                   budget=20, references=independents, surrogates=[finetuned])  # fmt: skip


def test_preference_against_the_nearest_reference_keeps_the_references_labels(source, finetuned, nulls, tmp_path):
    from modelprint import data

    ds = data.load("digits", "test")
    spelled = "divergent(candidates=20,references=2,surrogates=1,contrast=0)+preference(against=nearest)+mean-gap"
    refs = nulls[::2]  # a LeNet and an MLP; contrast 0, so that they often answer as the owner
    fp = mp.extract(source.module, spelled, (ds.x, ds.y), budget=30, references=refs, surrogates=[finetuned])
    fp.save(tmp_path / "p.fp")
    loaded = mp.Fingerprint.load(tmp_path / "p.fp")
    assert loaded.aux["references"].shape == (30, 2) and torch.equal(loaded.aux["references"], fp.aux["references"])
    with torch.no_grad():
        own, ref = (m(fp.queries).argmax(1) for m in (source.module, refs[0]))
        assert torch.equal(loaded.aux["references"][:, 0], ref)
        # a reference is its own nearest: +1 nowhere, -1 wherever it differs from the owner
        nearest_to_owner = max((own == r).double().mean() for r in loaded.aux["references"].T)
        expected = 1 - ((1 - nearest_to_owner) + (own != ref).double().mean()) / 2
    assert 0.3 < expected < 0.95 and mp.score(loaded, refs[0]) == pytest.approx(float(expected))
    assert mp.score(loaded, copy.deepcopy(source.module)) == pytest.approx(1.0)


# --- the fingerprint file --------------------------------------------------------------------------------


def test_file_round_trips_bit_for_bit(akh, tmp_path):
    a, b = tmp_path / "a.fp", tmp_path / "b.fp"
    akh.save(a)
    loaded = mp.Fingerprint.load(a)
    loaded.save(b)
    assert a.read_bytes() == b.read_bytes()
    assert torch.equal(loaded.queries, akh.queries) and torch.equal(loaded.responses, akh.responses)
    assert list(loaded.null_scores) == list(akh.null_scores) and loaded.scheme == akh.scheme
    assert loaded.scheme.label == "AKH"
    assert repr(loaded).startswith("Fingerprint(AKH, ") and "calibrated on" in repr(loaded) and len(repr(loaded)) < 200


def test_lime_fingerprint_keeps_its_masks(fingerprints, tmp_path, source):
    fp = fingerprints("ZestOfLIME")
    fp.save(tmp_path / "lime.fp")
    loaded = mp.Fingerprint.load(tmp_path / "lime.fp")
    assert torch.equal(loaded.aux["masks"], fp.aux["masks"])
    assert loaded.unit == BUDGET  # one reference input, every mask of the budget
    assert mp.score(loaded, source.module) == pytest.approx(1.0)


def _rewrite(src, dst, tensors=None, header=None):
    with safe_open(str(src), "pt") as f:
        meta, ts = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    h = json.loads(meta["modelprint"])
    ts.update(tensors or {})
    h.update(header or {})
    save_file(ts, str(dst), metadata={"modelprint": json.dumps(h)})


def test_file_rejects_tampering_truncation_and_foreign_files(akh, tmp_path):
    good = akh.save(tmp_path / "good.fp")
    flipped = akh.responses.clone()
    flipped[0] = (flipped[0] + 1) % 10
    cases = {
        "responses": ({"responses": flipped}, None, "checksum mismatch"),
        "budget": (None, {"budget": 39}, "checksum mismatch"),
        "version": (None, {"format_version": 99}, "version 99 is not supported"),
        "format": (None, {"format": "other"}, "not a modelprint fingerprint"),
    }
    for name, (tensors, header, message) in cases.items():
        bad = tmp_path / f"{name}.fp"
        _rewrite(good, bad, tensors, header)
        with pytest.raises(FileFormatError, match=message) as e:
            mp.Fingerprint.load(bad)
        assert str(bad) in str(e.value) and "\n" not in str(e.value)
    truncated = tmp_path / "truncated.fp"
    truncated.write_bytes(good.read_bytes()[:-50])
    foreign = tmp_path / "foreign.fp"
    save_file({"w": torch.zeros(3)}, str(foreign))
    junk = tmp_path / "junk.fp"
    junk.write_bytes(b"\x00" * 100)
    for path, message in ((truncated, "not a readable"), (foreign, "no modelprint header"), (junk, "not a readable")):
        with pytest.raises(FileFormatError, match=message):
            mp.Fingerprint.load(path)
    with pytest.raises(FileFormatError, match="no such"):
        mp.Fingerprint.load(tmp_path / "missing.fp")


def test_suspect_with_another_label_set(fingerprints, zoo):
    parity = zoo(f"{SOURCE}->transfer(digits-parity,0)").module  # 2 classes instead of 10
    assert 0.0 <= mp.score(fingerprints("FBI"), parity) <= 1.0
    with pytest.raises(AccessError, match="class by class"):
        mp.score(fingerprints("ZestOfLIME"), parity)


def test_combined_verdict_over_schemes(akh, fingerprints, nulls, source, independents):
    sac = mp.calibrate(fingerprints("SAC-w"), nulls)
    v = mp.verify_combined([akh, sac], source.module)
    assert v.related and v.queries == 2 * BUDGET and set(v.evidence) == {"AKH", "SAC-w"}
    assert v.p_value == pytest.approx(min(1.0, 2 * min(x["p_value"] for x in v.evidence.values())))
    assert not mp.verify_combined([akh, sac], independents[1]).related
