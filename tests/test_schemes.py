"""Each scheme's parts against small cases worked out by hand from its paper's definition."""

from __future__ import annotations

import pytest
import torch

from modelprint.access import WhiteBox
from modelprint.errors import ConfigError
from modelprint.fingerprint import DISTANCES, REPRESENTATIONS, SAMPLERS, Context


def test_sac_correlation_is_half_the_cosine_distance_of_the_logits():
    sac = REPRESENTATIONS.make("sac")
    assert sac.needs == "logits" and REPRESENTATIONS.make("sac", probs=True).needs == "probs"
    out = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [-1.0, 0.0]])
    expected = torch.tensor([[0, 0.5, 0, 1], [0.5, 0, 0.5, 0.5], [0, 0.5, 0, 1], [1, 0.5, 1, 0]], dtype=torch.float64)
    assert torch.allclose(sac(out, {}, 2), expected)
    # SAC's distance: the mean absolute difference of the two matrices
    other = expected.clone()
    other[0, 1] = other[1, 0] = 0.0
    assert DISTANCES.make("l1")(expected, other) == 1.0 / 16


def test_ddv_reads_logits_and_compares_pairs():
    ddv = REPRESENTATIONS.make("ddv")
    assert ddv.needs == "logits"
    out = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # pairs: identical, orthogonal
    assert torch.allclose(ddv(out, {}, 2), torch.tensor([[0.0, 1.0]], dtype=torch.float64))


def test_zest_aligns_classes_before_one_cosine():
    w = torch.randn(12, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    d = DISTANCES.make("aligned-cosine")
    assert d(w, w[:, [2, 0, 3, 1]]) < 1e-12  # renamed classes are the same model
    v = torch.randn(12, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert d(w, v) > 0.3  # an unrelated model stays far after alignment
    assert DISTANCES.make("cosine")(w, w[:, [2, 0, 3, 1]]) > 0.3  # without alignment they differ


def test_zest_regresses_logits_of_masked_variants():
    lime = REPRESENTATIONS.make("lime")
    masks = torch.tensor([[[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]])  # one reference, 3 masks, 2 segments
    weights = torch.tensor([[2.0, -1.0], [0.5, 3.0]])  # segment x class
    out = masks[0] @ weights  # an exactly linear model
    assert lime.needs == "logits"
    assert torch.allclose(lime(out, {"masks": masks}, 2), weights.double())


def test_fbi_label_rank():
    rank = REPRESENTATIONS.make("label-rank")
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.7, 0.2, 0.1], [0.5, 0.4, 0.1]])
    y = torch.tensor([2, 0, 2])
    assert rank(probs, {"labels": y}, 3).tolist() == [1, 0, 2]
    assert REPRESENTATIONS.make("label-rank", k=2)(probs, {"labels": y}, 3).tolist() == [1, 0, 2]
    hard = REPRESENTATIONS.make("label-rank", k=1)
    assert hard.needs == "labels" and hard(probs.argmax(1), {"labels": y}, 3).tolist() == [1, 0, 1]


def _context(owner, n=64, budget=20, seed=0):
    from modelprint import data

    ds = data.load("digits", "test")
    return Context(WhiteBox(owner), ds.x[:n], ds.y[:n], budget, torch.Generator().manual_seed(seed))


def test_sac_m_pastes_one_box_near_a_corner(source):
    ctx = _context(source.module, budget=30)
    q = SAMPLERS.make("cutmix").sample(ctx).x
    ctx2 = _context(source.module, budget=30)
    a = torch.randint(0, len(ctx2.x), (30,), generator=ctx2.gen)
    changed = (q != ctx2.x[a]).any(0)[0]  # pixels any query changed, over the 8x8 grid
    rows, cols = torch.nonzero(changed, as_tuple=True)
    assert len(rows) and int(rows.max() - rows.min()) < 2 and int(cols.max() - cols.min()) < 2  # one 2x2 box
    outer = [0, 1, 6, 7]  # the outer sixths of 8 steps, with the box's width
    assert any(int(r) in outer for r in rows) and any(int(c) in outer for c in cols)


def test_ipguard_points_stop_at_the_margin(source):
    ctx = _context(source.module, budget=8)
    k = 2.0
    x = SAMPLERS.make("boundary", k=k, steps=400).sample(ctx).x
    with torch.no_grad():
        top = source.module(x).topk(2, dim=1).values
    gap = top[:, 0] - top[:, 1]
    assert bool((gap >= k - 1e-4).all()), gap
    assert float(gap.median()) < 3 * k, gap  # frozen when they meet it, not pushed on by Adam's momentum


def test_cae_keeps_examples_the_owner_now_gets_wrong(source, zoo):
    refs = [zoo(f"train(mlp,digits,{s})").module for s in (11, 12)]
    surr = [zoo(f"{source.expression}->label_extract(mlp,{s},queries=own)").module for s in (11, 12)]
    ctx = _context(source.module, n=200, budget=10)
    ctx.references, ctx.surrogates = (lambda n: refs[:n]), (lambda n: surr[:n])
    sampler = SAMPLERS.make("conferrable", references=2, surrogates=2, steps=30, candidates=4)
    x = sampler.sample(ctx).x
    dist = (x[:, None] - ctx.x[None]).abs().flatten(2).amax(2)  # L-inf distance to every clean input
    assert len(x) == 10 and float(dist.min(1).values.max()) <= 0.15 + 1e-5  # within eps of the range (0..1)
    origin = ctx.y[dist.argmin(1)]
    wrong = WhiteBox(source.module).labels(x) != origin
    assert float(wrong.float().mean()) >= 0.8  # the paper's filter: the owner no longer gets them right


def test_preference_for_the_owner_over_the_population():
    rep = REPRESENTATIONS.make("preference")
    aux = {"owner": torch.tensor([1, 2, 3, 4]), "consensus": torch.tensor([0, 0, 0, 4])}
    suspect = rep(torch.tensor([1, 0, 7, 4]), aux, 10)  # owner's, population's, neither, both agree
    assert suspect.tolist() == [1.0, -1.0, 0.0, 0.0]
    owner = rep(aux["owner"], aux, 10)
    gap = DISTANCES.make("mean-gap")
    assert 1 - gap(owner, owner) == 1.0
    assert 1 - gap(owner, suspect) == 1 - (0.75 - 0.0) / 2
    assert rep.needs == "labels"


def test_preference_against_the_nearest_reference():
    # two references: a strong one that follows the usual answer (0) and a weak one that answers 5 or 6
    refs = torch.tensor([[0, 5], [0, 6], [0, 5], [0, 6]])
    aux = {"owner": torch.tensor([1, 2, 3, 4]), "consensus": torch.tensor([0, 0, 0, 0]), "references": refs}
    weak = torch.tensor([5, 6, 5, 4])  # like the weak reference, once like the owner
    assert REPRESENTATIONS.make("preference")(weak, aux, 10).tolist() == [0.0, 0.0, 0.0, 1.0]
    nearest = REPRESENTATIONS.from_spec("preference(against=nearest)")
    assert nearest(weak, aux, 10).tolist() == [-1.0, -1.0, -1.0, 1.0]  # measured against the weak reference
    assert nearest(torch.tensor([0, 0, 3, 0]), aux, 10).tolist() == [-1.0, -1.0, 1.0, -1.0]  # against the strong
    with pytest.raises(ConfigError, match="shape"):
        nearest(weak, aux | {"references": refs[:3]}, 10)
    with pytest.raises(ConfigError, match="divergent"):
        nearest(weak, {"owner": aux["owner"], "consensus": aux["consensus"]}, 10)
    with pytest.raises(ConfigError, match="consensus' or 'nearest'"):
        REPRESENTATIONS.from_spec("preference(against=mean)")
