"""No leakage between detectors and the attacks they are scored on: the surrogates a fingerprint builds by
default never share recipe and architecture with a positive of any benchmark, and leave-one-recipe-out never
hands a fingerprint the recipe it is scored on."""

from __future__ import annotations

import pytest

from modelprint import bench
from modelprint.bench import thieves
from modelprint.fingerprint.helpers import HELPER_ARCHS, surrogate_step

HELPERS = {thieves.recipe_of(surrogate_step(a, 0)) for a in HELPER_ARCHS}


def benchmark_positives():
    for name in bench.BENCHMARKS.names():
        b = bench.load(name, "full")
        for src in b.sources:
            for t in b.positives.get(src, ()):
                yield t.model[len(src) + 2 :] if t.model.startswith(f"{src}->") else ""
    for template in {**thieves.EXTRACTION, **thieves.COPIES}.values():
        for arch in HELPER_ARCHS:
            yield thieves.positive(template, arch, 0)


@pytest.mark.parametrize("tail", sorted({t for t in benchmark_positives() if t}))
def test_default_surrogates_share_no_recipe_with_a_benchmark_positive(tail):
    shared = HELPERS & set(thieves.recipes_of(tail))
    assert not shared, f"{tail} is built like a default surrogate: {shared}"


@pytest.mark.parametrize("held_out", list(thieves.EXTRACTION))
def test_leave_one_recipe_out(held_out):
    scored = {thieves.recipe_of(thieves.positive(thieves.EXTRACTION[held_out], a, 0)) for a in HELPER_ARCHS}
    helpers = thieves.surrogates_for(held_out, HELPER_ARCHS)
    assert len(helpers) == len(thieves.EXTRACTION) - 1
    assert not scored & {thieves.recipe_of(h) for h in helpers}


def test_the_guard_can_fail():
    # a positive built exactly like a surrogate is caught (the check is not vacuous)
    assert HELPERS & set(thieves.recipes_of(surrogate_step("lenet", 9)))
