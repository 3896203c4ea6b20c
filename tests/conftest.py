"""Shared fixtures: one zoo cache for the whole session, so each model is trained once."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

from modelprint.lineage import build_node

# the suite must pass with any thread count (floating-point sums differ): run it with 1 and with 2
torch.set_num_threads(int(os.environ.get("MODELPRINT_TEST_THREADS", "2")))
# property tests check values, not speed: a first example that imports a library on a loaded machine is no failure
settings.register_profile("modelprint", deadline=None)
settings.load_profile("modelprint")

SOURCE = "train(cnn,digits,0)"


@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="session")
def zoo(zoo_cache):
    """``zoo(expr)`` builds (once per session) and returns the ``Built`` model of ``expr``."""

    def get(expr: str):
        return build_node(expr, cache_dir=zoo_cache)

    return get


@pytest.fixture(scope="session")
def source(zoo):
    return zoo(SOURCE)


@pytest.fixture(scope="session")
def marked(source):
    """The source with a trigger-set watermark, and its key."""
    from modelprint import watermark

    return watermark.embed(source.module, "trigger-set(size=50)", "digits", key_seed=0, epochs=10)
