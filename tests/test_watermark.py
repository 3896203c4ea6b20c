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
from modelprint.errors import AccessError, ConfigError, FileFormatError
from modelprint.lineage import build
from modelprint.lineage.train import accuracy
from modelprint.watermark import bench


@pytest.fixture(scope="session")
def clean(zoo):
    return [zoo(f"train({a},digits,{s})").module for s in (3, 4, 6) for a in ("lenet", "mlp")]


def test_trigger_set_verifies_and_unrelated_models_do_not(marked, source, clean):
    model, key = marked
    v = wm.verify(key, model)
    assert v.related and v.p_value < 1e-6 and v.method.startswith("exact binomial") and v.queries == 50
    for m in [source.module, *clean]:  # the unmarked original and independent models
        u = wm.verify(key, m)
        assert not u.related and u.p_value > 0.01


@pytest.fixture(scope="session")
def every_scheme(source, clean):
    """Each scheme embedded in the source, calibrated on clean models where it needs a null."""
    out = {}
    for spec in bench.SCHEMES:
        model, key = wm.embed(source.module, spec, "digits", key_seed=2)
        out[spec] = (model, wm.calibrate(key, clean[:5]) if key.chance is None else key)
    return out


@pytest.mark.parametrize("spec", bench.SCHEMES)
def test_every_scheme_detects_its_mark_costs_little_and_spares_the_unmarked(every_scheme, spec, source, clean, zoo):
    model, key = every_scheme[spec]
    v = wm.verify(key, model)
    # exact nulls reach any p-value; a null from 5 clean models can only be so sure (beta-binomial fitted to 5)
    assert v.related and v.p_value < (1e-6 if key.scheme.chance(10) else 1e-3)
    # the unmarked original, and clean models not used to calibrate (a white-box key reads one layer, which
    # only a model of the same architecture has)
    unmarked = [source.module, zoo("train(cnn,digits,5)").module, *([] if key.scheme.white_box else clean[5:])]
    for m in unmarked:
        assert wm.verify(key, m).p_value > 0.01
    test = data.load("digits", "test")
    # a mark costs little: at most 2 points (9 of 450 test digits; one digit is 0.22 points, so a 1-point bound
    # sat within a digit or two of what frontier-stitching's fine-tuning costs, and flipped between machines)
    assert accuracy(source.module, test.x, test.y) - accuracy(model, test.x, test.y) <= 0.02


def test_uchida_reads_weights_not_outputs(every_scheme):
    model, key = every_scheme["uchida"]
    assert key.scheme.layer and key.chance == 0.5 and wm.verify(key, model).queries == 0
    with pytest.raises(AccessError, match="white-box"):
        wm.verify(key, lambda x: model(x).argmax(1))
    # structural obfuscation removes it, a function-preserving rescaling of units does not (reported in bench)
    permuted = build("train(cnn,digits,0)->permute(1)")
    assert not wm.verify(key, permuted).related


def test_uchida_on_a_plain_sequential_cnn():
    """A user's nn.Sequential: the marked layer's input is a feature map, and the key's projection is no input."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(16 * 4 * 4, 10),
    )  # fmt: skip
    model, key = wm.embed(net, "uchida", "digits", key_seed=0, epochs=3)
    assert wm.verify(key, model).p_value < 1e-4
    assert wm.verify(key, net).p_value > 0.01  # the unmarked network it started from


ONE_TARGET = ("unrelated", "content", "noise")


@pytest.mark.parametrize("spec", ONE_TARGET)
def test_one_target_keys_are_not_matched_by_clean_models(every_scheme, spec, source, clean, zoo):
    """Issue 14: a random target could be a class clean models give most of the key anyway. The target and
    inputs are chosen against clean references, so the unmarked owner never gives the target on the key and
    independent models (other seeds and architectures) give it on well under half of the key (a third at most on
    one machine, up to 40% for a LeNet on another), while the marked model gives it on nearly all."""
    model, key = every_scheme[spec]
    target = int(key.labels[0])
    assert (key.labels == target).all() and len(key.labels) == 100
    with torch.no_grad():
        assert not (source.module(key.inputs).argmax(1) == target).any()  # the owner's model is a reference
        assert (model(key.inputs).argmax(1) == target).float().mean() > 0.9
        for m in [*clean, zoo("train(cnn,digits,5)").module]:
            assert (m(key.inputs).argmax(1) == target).float().mean() < 0.55


@pytest.mark.parametrize("spec", ONE_TARGET)
def test_one_target_keys_are_deterministic_given_the_seed(every_scheme, spec, source):
    _, key = every_scheme[spec]  # embedded with key_seed=2
    train = data.load("digits", "train")
    state = torch.get_rng_state()
    x, y = key.scheme.make_key(source.module, train.x, train.y, 10, torch.Generator().manual_seed(2))
    assert torch.equal(x.float(), key.inputs) and torch.equal(y, key.labels)
    assert torch.equal(torch.get_rng_state(), state)  # surrogates are seeded from the key's generator only
    # the key is drawn from the scheme's first candidates; stamped ones never from the target's own class
    scheme = key.scheme
    cand, own = scheme.candidates(train.x, train.y, scheme.CANDIDATES * scheme.size, torch.Generator().manual_seed(2))
    cand = cand.clamp(train.x.min(), train.x.max()).float().flatten(1)
    drawn = [int(torch.nonzero((cand == k).all(1))[0]) for k in key.inputs.flatten(1)]
    assert drawn == sorted(set(drawn))  # distinct, in the order drawn
    assert own is None if spec == "unrelated" else not (own[drawn] == key.labels).any()


def test_frontier_stitching_keys_are_half_true_adversaries(source):
    scheme = wm.make_watermark("frontier-stitching(size=40)")
    train = data.load("digits", "train")
    x, y = scheme.make_key(source.module, train.x, train.y, 10, torch.Generator().manual_seed(0))
    flipped = source.module(x).argmax(1) != y
    assert len(x) == 40 and int(flipped.sum()) == 20  # labels are the true ones; half the model gets wrong


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
    v = wm.verify(key, model)
    assert v.related and "beta-binomial" in v.method and not wm.verify(key, clean[5]).related


def test_key_round_trips_and_rejects_tampering(marked, tmp_path):
    _, key = marked
    path = key.save(tmp_path / "owner.key")
    loaded = wm.Key.load(path)
    loaded.save(tmp_path / "again.key")
    assert (tmp_path / "again.key").read_bytes() == path.read_bytes()
    assert torch.equal(loaded.labels, key.labels) and loaded.scheme == key.scheme
    assert repr(loaded).startswith("Key(") and f"{len(key.inputs)} inputs" in repr(loaded) and len(repr(loaded)) < 200
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


def test_robustness_table_covers_every_scheme_and_attack(source, zoo_cache, tmp_path):
    fast = {n: s.replace("(0)", "(0,epochs=2)").replace(",0)", ",0,epochs=2)") for n, s in bench.ATTACKS.items()}
    nulls = [f"train({a},digits,{s})" for s in (3, 4) for a in ("lenet", "mlp")]
    kw = dict(schemes=bench.SCHEMES, attacks=fast, nulls=nulls, controls=["train(mlp,digits,6)"], epochs=4,
              cache_dir=zoo_cache)  # fmt: skip
    results, cost = bench.run(tmp_path, "train(cnn,digits,0)", **kw)
    attacks = results[results["kind"] == "attack"]
    assert set(zip(attacks["scheme"], attacks["attack"], strict=True)) == {
        (s, a) for s in bench.SCHEMES for a in ["none", *bench.ATTACKS]
    }
    assert len(results) == len(bench.SCHEMES) * (len(bench.ATTACKS) + 2) and list(cost["scheme"]) == list(bench.SCHEMES)
    assert attacks.loc[attacks["attack"] == "none", "detected"].all()  # the mark is there before any attack
    assert not results.loc[results["kind"] == "control", "detected"].any()
    # WRT rule: success = undetected and at most 5 points lost
    ok = ~attacks["detected"] & ~(attacks["accuracy_drop"] > bench.MAX_DROP) & (attacks["attack"] != "none")
    assert (attacks["succeeded"] == ok).all()
    table = (tmp_path / "results.csv").read_bytes()
    again, _ = bench.run(tmp_path, "train(cnn,digits,0)", **kw)  # resumes: nothing left to do
    assert len(again) == len(results) and (tmp_path / "results.csv").read_bytes() == table
    html = bench.report(tmp_path).read_text()
    assert all(f'id="{k}"' in html for k in ("outcomes", "tradeoff", "embedding", "controls", "provenance"))


def test_deepsigns_reads_activations_of_any_module_but_not_outputs_or_torchscript(every_scheme):
    """DeepSigns' bits are a projection of the mean activation feeding the head: a foreign network carries them,
    an answer-only suspect and a TorchScript archive (no hooks) are refused with one line."""
    from .foreign_nets import Residual, train

    model, key = every_scheme["deepsigns"]
    assert key.chance == 0.5 and wm.verify(key, model).queries == 0
    with pytest.raises(AccessError, match="white-box"):
        wm.verify(key, lambda x: model(x).argmax(1))
    with pytest.raises(AccessError, match="TorchScript"):
        wm.verify(key, torch.jit.script(model))
    ds = data.load("digits", "train")
    torch.manual_seed(4)
    foreign = train(Residual(), ds.x.float(), ds.y, seed=4)
    marked, foreign_key = wm.embed(foreign, "deepsigns", "digits", epochs=5)
    # measured 31-32 of 32 bits with 1 and 2 threads; the unmarked network 17-21 (an exact Binomial(32, 1/2))
    found, unmarked = wm.verify(foreign_key, marked), wm.verify(foreign_key, foreign)
    assert found.p_value < 1e-5 and unmarked.score < found.score - 0.25, (found.summary(), unmarked.summary())
