"""The thieves' recipes: each yields a working model from the victim's answers alone (the thief's true labels are
scrambled here, so a recipe that read them would fail), and the other new attacks do what they say."""

from __future__ import annotations

import pytest
import torch

from modelprint import data
from modelprint.errors import ConfigError
from modelprint.lineage import build, parse, step
from modelprint.lineage.queries import QUERIES
from modelprint.lineage.train import accuracy

VICTIM = "train(mlp,mnist1d,0)"
# recipe -> lowest test accuracy it must reach on MNIST-1D (the victim has ~0.6, chance is 0.1); short runs
RECIPES = {
    "label_extract(mlp,7,epochs=8,queries=own)": 0.35,
    "label_extract(mlp,7,epochs=8,queries=augment)": 0.33,
    "label_extract(mlp,7,epochs=8,lr=0.05,queries=mixup,optimizer=sgd)": 0.33,
    "label_extract(cnn1d,7,epochs=8,queries=natural)": 0.16,
    "label_extract(mlp,7,epochs=8,queries=noise)": 0.14,
    "distill(mlp,7,epochs=8,queries=own,temperature=4.0)": 0.4,
    "jacobian_extract(mlp,7,seeds=100,rounds=3)": 0.18,
    "dfme(mlp,7,iterations=150)": 0.15,
}


@pytest.fixture(scope="module")
def scrambled(monkeypatch_module):
    """The thief's split with random labels: only a recipe that uses its true labels can be hurt by this."""
    real = data.load

    def load(name: str, split: str = "train"):
        ds = real(name, split)
        if split != "attacker":
            return ds
        y = ds.y[torch.randperm(len(ds.y), generator=torch.Generator().manual_seed(0))]
        return data.LabeledDataset(ds.x, y, ds.name, split, ds.num_classes)

    monkeypatch_module.setattr(data, "load", load)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def victim(tmp_path_factory):
    cache = tmp_path_factory.mktemp("thief-zoo")
    return cache, build(VICTIM, cache_dir=cache)


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_each_recipe_learns_from_the_answers_alone(recipe, victim, scrambled):
    cache, _ = victim
    test = data.load("mnist1d", "test")
    student = build(f"{VICTIM}->{recipe}", cache_dir=cache)
    assert accuracy(student, test.x, test.y) >= RECIPES[recipe], recipe


def test_true_labels_are_used_only_when_asked(victim, scrambled):
    cache, teacher = victim
    test = data.load("mnist1d", "test")
    honest = build(f"{VICTIM}->label_extract(mlp,8,epochs=8,queries=own)", cache_dir=cache)
    # with scrambled true labels, a thief that mixes them in learns less of the victim
    mixed = build(f"{VICTIM}->label_extract(mlp,8,epochs=8,queries=own,true_labels=true)", cache_dir=cache)
    agree = [float((m(test.x).argmax(1) == teacher(test.x).argmax(1)).float().mean()) for m in (honest, mixed)]
    assert agree[0] > agree[1] + 0.05, agree


def test_query_sources_stay_in_range_and_never_send_own_data_when_they_should_not():
    x = data.load("digits", "attacker").x[:16]
    gen = torch.Generator().manual_seed(0)
    for name in QUERIES.names():
        q = QUERIES.make(name).bind(x)(x, gen)
        assert q.shape[1:] == x.shape[1:] and len(q) >= len(x), name
        assert float(q.min()) >= float(x.min()) - 1e-6 and float(q.max()) <= float(x.max()) + 1e-6, name
        if name in ("noise", "natural"):
            assert not any(torch.equal(a, b) for a in q for b in x), name


def test_recipe_parameters_are_validated():
    with pytest.raises(ConfigError, match="query source"):
        parse("train(mlp,digits,0)->label_extract(mlp,0,queries=telepathy)")
    with pytest.raises(ConfigError, match="optimizer"):
        parse("train(mlp,digits,0)->label_extract(mlp,0,optimizer=lbfgs)")
    with pytest.raises(ConfigError, match="scope"):
        step("prune(0.5,scope=neuron)")


def test_prune_scopes(victim):
    cache, _ = victim
    glob = build(f"{VICTIM}->prune(0.7)", cache_dir=cache)
    layer = build(f"{VICTIM}->prune(0.7,scope=layer)", cache_dir=cache)
    from modelprint.nets import weight_layers

    def zeros(m):
        return [float((w.weight == 0).float().mean()) for w in weight_layers(m)]

    assert all(z == pytest.approx(0.7, abs=0.01) for z in zeros(layer))
    g = zeros(glob)
    assert max(g) - min(g) > 0.05  # global pruning spreads unevenly over the layers


def test_boundary_randomisation_keeps_accuracy_and_moves_answers_off_the_data(victim):
    cache, _ = victim
    teacher = build("train(mlp,digits,0)", cache_dir=cache)
    moved = build("train(mlp,digits,0)->randomize_boundary(0)", cache_dir=cache)
    test = data.load("digits", "test")
    assert accuracy(moved, test.x, test.y) >= accuracy(teacher, test.x, test.y) - 0.08
    gen = torch.Generator().manual_seed(1)
    a, b = test.x[:300], test.x[torch.randperm(len(test.x), generator=gen)[:300]]
    with torch.no_grad():
        on = float((moved(a).argmax(1) == teacher(a).argmax(1)).float().mean())
        off = float((moved((a + b) / 2).argmax(1) == teacher((a + b) / 2).argmax(1)).float().mean())
    assert on - off > 0.2, (on, off)  # measured 0.93 on the data, 0.55 on blends
