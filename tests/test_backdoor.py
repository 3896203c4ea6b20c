"""Backdoors: triggers stamp only what they should, poisoning is exact, a BadNets or blended model obeys its
trigger while its parent does not, the hidden backdoor keeps the parent's answers on clean data; Neural Cleanse
flags poisoned models (and their target class) and passes a clean one, from Python and the command line; the diff
against a trusted parent finds a BadNets trigger from gradients and from the suspect's labels alone; STRIP
flags triggered inputs of a backdoored model and neither clean inputs nor a trigger a clean model ignores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from modelprint import data, integrity
from modelprint.errors import ConfigError
from modelprint.integrity.strip import Screening
from modelprint.lineage import normalize, parse, step
from modelprint.lineage.backdoor import Blend, Patch, attack_success, data_range, poison
from modelprint.lineage.train import predict

from .conftest import SOURCE
from .test_cli import cli


@pytest.mark.parametrize("shape", [(5, 1, 8, 8), (5, 30), (5, 1, 40)])
def test_patch_stamps_only_the_last_positions(shape):
    x = torch.full(shape, 0.5)
    out = Patch(2).apply(x, 0.0, 1.0)
    changed = out != x
    if len(shape) == 4:
        assert changed[:, :, -2:, -2:].all() and not changed[:, :, :-2].any() and not changed[..., :-2].any()
        assert out[0, 0, -2, -2] == 1.0 and out[0, 0, -2, -1] == 0.0  # a checkerboard of the extremes
    else:
        assert changed[..., -2:].all() and not changed[..., :-2].any()
    with pytest.raises(ConfigError, match="does not fit"):
        Patch(9).apply(torch.zeros(2, 1, 8, 8), 0.0, 1.0)


def test_blend_is_a_fixed_pattern_mixed_in():
    x = torch.rand(4, 1, 8, 8)
    a, b = Blend(0.2, seed=3).apply(x, 0.0, 1.0), Blend(0.2, seed=3).apply(x, 0.0, 1.0)
    assert torch.equal(a, b) and not torch.equal(a, Blend(0.2, seed=4).apply(x, 0.0, 1.0))
    k = (a - 0.8 * x) / 0.2  # the same noise pattern behind every input
    assert torch.allclose(k, k[0].expand_as(k), atol=1e-5) and 0 <= k.min() and k.max() <= 1


def test_poisoning_is_exact_and_deterministic():
    ds = data.load("digits", "attacker")
    x, y, poisoned = poison(ds.x, ds.y, Patch(2), 3, 0.1, 0, "digits")
    assert poisoned.sum() == round(0.1 * len(ds.y)) and (ds.y[poisoned] != 3).all() and (y[poisoned] == 3).all()
    assert torch.equal(x[~poisoned], ds.x[~poisoned]) and torch.equal(y[~poisoned], ds.y[~poisoned])
    assert torch.equal(poison(ds.x, ds.y, Patch(2), 3, 0.1, 0, "digits")[2], poisoned)


def test_expressions_and_their_errors():
    assert normalize("train(cnn,digits,0)->badnets(3,0,patch=3)") == "train(cnn,digits,0)->badnets(3,0,patch=3)"
    assert parse("train(cnn,digits,0)->hidden(0,1)")[1].trigger == Patch(2)
    assert step("blended(1,2,alpha=0.1)").trigger == Blend(0.1, 2)
    for bad, message in (
        ("badnets(0,0,rate=1.5)", "rate"),
        ("badnets(-1,0)", "target"),
        ("blended(0,0,alpha=0)", "alpha"),
        ("hidden(0,0,patch=0)", "patch"),
    ):
        with pytest.raises(ConfigError, match=message):
            step(bad)
    with pytest.raises(ConfigError, match="has 10 classes"):
        step("badnets(12,0)").training_data("digits")


@pytest.mark.parametrize("op", ["badnets(0,0,rate=0.2)", "blended(0,0,rate=0.2)"])
def test_a_poisoned_model_obeys_its_trigger_and_its_parent_does_not(zoo, source, op):
    backdoored = zoo(f"train(cnn,digits,0)->{op}")
    assert attack_success(backdoored.module, step(op), "digits") > 0.8
    assert attack_success(source.module, step(op), "digits") < 0.1
    assert backdoored.test_accuracy > source.test_accuracy - 0.05


def test_the_hidden_backdoor_answers_like_its_parent_on_clean_data(zoo):
    parent = zoo("train(mlp,mnist1d,0)")
    hidden = zoo("train(mlp,mnist1d,0)->hidden(0,0)")
    x = data.load("mnist1d", "test").x
    agree = (predict(hidden.module, x).argmax(1) == predict(parent.module, x).argmax(1)).float().mean()
    assert agree > 0.93 and attack_success(hidden.module, step("hidden(0,0)"), "mnist1d") > 0.8
    assert attack_success(parent.module, step("hidden(0,0)"), "mnist1d") < 0.1
    pairs = list(zip(parent.module.parameters(), hidden.module.parameters(), strict=True))
    moved = sum(int((a != b).sum()) for a, b in pairs)
    assert moved < 0.21 * sum(a.numel() for a, _ in pairs)  # only the free fifth of the weights moved


CLEAN = ["train(cnn,digits,0)", "train(cnn,digits,1)", "train(cnn,digits,0)->finetune(1)", "train(cnn,digits,3)"]


@pytest.fixture(scope="module")
def null_scores(zoo, zoo_cache):
    return integrity.scores("neural-cleanse", [zoo(e).module for e in CLEAN], "digits")


# a blended trigger covers the whole input, which Neural Cleanse's small masks are not made for: it scores lower
# (2.8 against clean models' 0.7-1.6 here), so benchmarks/backdoor.py measures it rather than a test asserting it
@pytest.mark.parametrize("op", ["badnets(0,0,rate=0.2)", "hidden(1,0)"])
def test_neural_cleanse_flags_a_poisoned_model_and_its_target(zoo, null_scores, op):
    v = integrity.scan(zoo(f"train(cnn,digits,0)->{op}").module, "digits", null_scores=null_scores)
    # with 4 clean models the t-tail is wide: p was 0.017 on one machine, far lower on others; the margin that
    # holds is the score's, an anomaly index at least 1 above every clean model's
    assert v.outcome == "backdoored" and v.related and v.p_value <= 0.05, v.summary()
    assert v.evidence["class"] == step(op).target and v.score > max(null_scores) + 1


def test_neural_cleanse_passes_an_independent_clean_model(zoo, null_scores):
    v = integrity.scan(zoo("train(cnn,digits,2)").module, "digits", null_scores=null_scores)
    assert v.outcome == "clean" and v.p_value > 0.1, v.summary()


def test_backdoor_scan_command(zoo, zoo_cache, tmp_path):
    suspect = "train(cnn,digits,0)->hidden(1,0)"
    for expr in (suspect, *CLEAN[:3]):  # built here, so the command only reads them
        zoo(expr)
    nulls = [a for e in CLEAN[:3] for a in ("--null", e)]
    quick = ["--detector", "neural-cleanse(steps=100,inputs=32)"]
    r = cli("backdoor", "scan", suspect, *nulls, *quick, "--plot", str(tmp_path / "t.png"), "--json",
            "--report", str(tmp_path / "r.html"), "--cache", str(zoo_cache))  # fmt: skip
    # the decision itself is tested above with the full detector and 4 clean models: with 3 clean models and the
    # quick detector, one clean model's anomaly index can reach the suspect's (measured with one thread: 3.7 against
    # a threshold of 12.3), so here the exit code must follow the verdict, whichever it is
    outcome = json.loads(r.stdout)["outcome"]
    assert r.returncode == {"backdoored": 0, "clean": 1}[outcome], r.stdout + r.stderr
    assert (tmp_path / "t.png").stat().st_size > 1000
    page = (tmp_path / "r.html").read_text()
    assert all(f'id="{k}"' in page for k in ("verdict", "trigger", "classes", "null", "provenance"))
    assert page.count("data:image/png;base64,") == 4  # the mask, stamped inputs, every class, the null
    assert f"<th>outcome</th><td>{ {'backdoored': 'BACKDOORED', 'clean': 'clean'}[outcome] }:" in page
    r = cli("backdoor", "diff", CLEAN[0], suspect, *quick, "--json", "--cache", str(zoo_cache))
    assert r.returncode == 0 and json.loads(r.stdout)["evidence"]["class"] == 1, r.stdout + r.stderr
    bad = cli("backdoor", "scan", suspect, "--null", CLEAN[0], "--detector", "nope", "--cache", str(zoo_cache))
    assert bad.returncode == 2 and "nope" in bad.stderr and "Traceback" not in bad.stderr


def test_the_diff_finds_the_trigger_a_suspect_obeys_and_its_trusted_parent_does_not(zoo, source):
    found = integrity.diff(source.module, zoo("train(cnn,digits,0)->badnets(0,0,rate=0.2)").module, "digits")
    assert found.outcome == "backdoored" and found.evidence["class"] == 0, found.summary()
    assert found.evidence["trigger_positions"] < 0.15 * found.evidence["positions"]
    tuned = integrity.diff(source.module, zoo("train(cnn,digits,0)->finetune(1)").module, "digits")
    assert tuned.outcome == "clean" and not tuned.related
    assert min(tuned.evidence["mask_norms"]) > 0.5 * tuned.evidence["positions"], tuned.evidence["mask_norms"]
    with pytest.raises(ConfigError, match="largest"):
        integrity.diff(source.module, source.module, "digits", largest=1.5)


def test_strip_counts_flagged_inputs_against_their_exact_null():
    # clean batches (screened scores drawn like the clean ones): the batch verdict's false-positive rate holds
    rng = np.random.default_rng(0)
    calls = [
        Screening(torch.from_numpy(rng.random(50)), torch.from_numpy(rng.random(200))).verdict(0.05).related
        for _ in range(2000)
    ]
    assert np.mean(calls) < 0.05 + 0.02
    few = Screening(torch.rand(5), torch.rand(10)).verdict(0.05)
    assert few.outcome == "inconclusive" and "cannot flag" in few.warnings[0]


BADNETS = "badnets(0,0,rate=0.2)"


@pytest.fixture(scope="module")
def inputs():
    """Attacker-split inputs of other classes than the BadNets target, and the same stamped with its trigger."""
    ds = data.load("digits", "attacker")
    x = ds.x[ds.y != step(BADNETS).target][:50]
    return x, step(BADNETS).trigger.apply(x, *data_range("digits"))


def test_strip_flags_triggered_inputs_of_a_backdoored_model_only(zoo, source, inputs):
    x, stamped = inputs
    backdoored = zoo(f"{SOURCE}->{BADNETS}").module
    hit = integrity.strip(backdoored, stamped, "digits")
    v = hit.verdict(0.05)
    assert hit.flagged(0.05).float().mean() > 0.5 and v.outcome == "backdoored" and v.p_value < 1e-6, v.summary()
    for model, batch in ((backdoored, x), (source.module, stamped)):  # clean inputs; a trigger the model ignores
        v = integrity.strip(model, batch, "digits").verdict(0.05)
        assert v.p_value > 0.01 and v.score < 0.2, v.summary()


def test_backdoor_strip_command(zoo, zoo_cache, inputs, tmp_path):
    np.savez(tmp_path / "in.npz", x=inputs[1].numpy())
    zoo(f"{SOURCE}->{BADNETS}")
    r = cli("backdoor", "strip", f"{SOURCE}->{BADNETS}", str(tmp_path / "in.npz"), "--csv", str(tmp_path / "p.csv"),
            "--json", "--cache", str(zoo_cache))  # fmt: skip
    assert r.returncode == 0 and json.loads(r.stdout)["outcome"] == "backdoored", r.stdout + r.stderr
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 51
    np.savez(tmp_path / "bad.npz", a=np.zeros((2, 64)), b=np.zeros(2))
    bad = cli("backdoor", "strip", SOURCE, str(tmp_path / "bad.npz"), "--cache", str(zoo_cache))
    assert bad.returncode == 2 and "expected an array 'x'" in bad.stderr and "Traceback" not in bad.stderr


def test_the_label_only_diff_finds_the_trigger_from_answers_alone(zoo, source):
    """The suspect only as a callable answering labels (what a served API gives): the search reads its labels."""
    from modelprint.access import BlackBox

    def api(module):
        return BlackBox(lambda x: module(x).argmax(1), "labels", input_shape=(1, 8, 8))

    search = "label-search(steps=60,samples=8)"
    poisoned = zoo("train(cnn,digits,0)->badnets(0,0,rate=0.2)").module
    found = integrity.diff(source.module, api(poisoned), "digits", search)
    assert found.outcome == "backdoored" and found.evidence["class"] == 0, found.summary()
    assert found.evidence["trigger_positions"] < 0.15 * found.evidence["positions"]
    assert found.queries == found.evidence["label_queries"] > 100_000
    tuned = integrity.diff(source.module, api(zoo("train(cnn,digits,0)->finetune(1)").module), "digits", search)
    assert tuned.outcome == "clean" and not tuned.related
    assert min(tuned.evidence["mask_norms"]) == tuned.evidence["positions"], tuned.evidence["mask_norms"]
    with pytest.raises(ConfigError, match="label-search"):
        integrity.diff(source.module, api(poisoned), "digits")  # Neural Cleanse needs the suspect's gradients
    with pytest.raises(ConfigError, match="success"):
        integrity.DETECTORS.from_spec("label-search(success=1.5)")
