"""Transformers: the symmetries that disguise a copy keep its function, the white-box comparisons see through
them and not into independent models, and a text encoder's embedding fingerprint works locally, from files and
over HTTP."""

from __future__ import annotations

import httpx
import pytest
import torch

from modelprint.errors import ConfigError, FileFormatError
from modelprint.lineage import build
from modelprint.serve import create_app, start
from modelprint.transformer import compare, corpus, load_encoder, save_encoder, similarity
from modelprint.transformer import embedding as emb
from modelprint.transformer.derive import derive, independent
from modelprint.transformer.serving import RemoteEncoder
from modelprint.transformer.text import FoldedNorm
from tests.test_cli import cli

VIT = "train(vit,digits,{},width=32)"
DISGUISED = VIT.format(0) + "->rotate(1)->permute(2)->finetune(3,epochs=1)"
TINY = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128)


@pytest.fixture(scope="session")
def vits(zoo):
    """The owner's tiny ViT, a disguised copy, and four independent ViTs (seeds 1-4)."""
    return zoo(VIT.format(0)).module, zoo(DISGUISED).module, [zoo(VIT.format(s)).module for s in range(1, 5)]


@pytest.fixture(scope="session")
def minilm():
    return load_encoder("minilm")


@pytest.fixture(scope="session")
def tiny_encoders(minilm):
    """Small encoders trained from scratch on the bundled text, of MiniLM's vocabulary: independent of it."""
    return [independent(s, minilm, steps=3, **TINY) for s in range(5)]


def _digits(n: int = 64) -> torch.Tensor:
    from modelprint import data

    return data.load("digits", "test").x[:n]


def test_symmetries_keep_a_vit_s_function_and_change_its_weights(zoo):
    owner = zoo(VIT.format(0)).module
    moved = build(VIT.format(0) + "->rotate(1)->permute(2)", cache_dir=False)
    x = _digits()
    with torch.no_grad():
        assert torch.allclose(owner(x), moved(x), atol=1e-3)
    pairs = zip(owner.state_dict().values(), moved.state_dict().values(), strict=True)
    same = [torch.allclose(a, b) for a, b in pairs]
    assert same.count(True) <= 2, "rotating the stream and permuting units moves (almost) every weight"


def test_head_and_unit_pruning_zero_what_they_say(zoo):
    from modelprint.transformer import view

    pruned = view(build(VIT.format(0) + "->prune_heads(0.5)->prune_units(0.25)", cache_dir=False))
    zero_heads = 0
    for layer in pruned.layers:  # heads compete over all blocks, units within their block
        heads = layer.output.weight.view(pruned.width, layer.heads, -1)  # stream x heads x head width
        zero_heads += (heads.abs().sum((0, 2)) == 0).sum().item()
        assert (layer.down.weight.abs().sum(0) == 0).sum().item() == layer.up.out_features // 4
    assert zero_heads == sum(layer.heads for layer in pruned.layers) // 2


def test_transformer_operations_refuse_other_networks():
    with pytest.raises(ConfigError, match="acts on transformers"):
        build("train(cnn,digits,0)->rotate(1)", cache_dir=False)


@pytest.mark.parametrize("method,copy_at_least,independent_below", [
    ("units", 0.9, 0.4), ("invariants", 0.9, 0.5), ("hidden-cka", 0.93, 0.88),
])  # fmt: skip
def test_white_box_scores_see_through_a_disguise_and_not_into_independent_models(
    vits, method, copy_at_least, independent_below
):
    owner, disguised, others = vits
    assert similarity(method, owner, disguised, "digits")[0] >= copy_at_least
    for other in others:
        assert similarity(method, owner, other, "digits")[0] < independent_below


def test_units_verdict_names_the_copy_and_spares_an_independent_model(vits):
    owner, disguised, others = vits
    copy_v = compare("units", owner, disguised, "digits", null_models=others[:3], alpha=0.01)
    assert copy_v.related and copy_v.p_value < 1e-3
    other_v = compare("units", owner, others[3], "digits", null_models=others[:3], alpha=0.01)
    assert not other_v.related and other_v.p_value > 0.05


def test_minilm_loads_offline_and_a_rotated_copy_saves_and_loads(minilm, tmp_path):
    texts = corpus("test")[:16]
    moved = derive(minilm, "permute(1)->rotate(2)")
    assert any(isinstance(m, FoldedNorm) for m in moved.modules())
    gram = lambda e: e @ e.T  # noqa: E731 - the stream is rotated, so embeddings are too: their geometry is not
    assert torch.allclose(gram(minilm.encode(texts)), gram(moved.encode(texts)), atol=1e-4)
    assert similarity("units", minilm, moved)[0] > 0.99
    folder = save_encoder(moved, tmp_path / "moved")
    assert torch.allclose(load_encoder(folder).encode(texts), moved.encode(texts), atol=1e-5)
    assert not list(folder.glob("*.bin")) and list(folder.glob("*.safetensors"))


def test_an_encoder_folder_that_is_not_one_fails_in_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises((FileFormatError, ConfigError)):
        load_encoder(tmp_path)
    with pytest.raises((FileFormatError, ConfigError)):
        load_encoder(tmp_path / "nothing")


def test_units_on_an_independent_encoder_of_the_same_shape_is_chance(minilm, tiny_encoders):
    other = independent(0, minilm, steps=2)
    score, evidence = similarity("units", minilm, other)
    assert abs(score) < 0.2 and evidence["analytic_p_value"] > 0.01
    with pytest.raises(ConfigError, match="one depth"):
        similarity("units", minilm, tiny_encoders[0])
    assert similarity("hidden-cka", minilm, tiny_encoders[0])[0] < 0.9  # across depths and widths


@pytest.fixture(scope="session")
def embedding_fps(minilm, tiny_encoders):
    return {access: emb.calibrate(emb.extract(minilm, access, queries=48), tiny_encoders[:4]) for access in emb.ACCESS}


@pytest.fixture(scope="session")
def derived_encoder(minilm):
    return derive(minilm, "finetune(0,steps=4)->permute(1)")


@pytest.mark.parametrize("access", ["embeddings", "ranks"])
def test_embedding_fingerprint_tells_a_derived_encoder_from_an_independent_one(
    access, embedding_fps, derived_encoder, tiny_encoders, tmp_path
):
    fp = emb.EmbeddingFingerprint.load(embedding_fps[access].save(tmp_path / "fp.safetensors"))
    assert emb.verify(fp, derived_encoder, alpha=0.01).related
    other = emb.verify(fp, tiny_encoders[4], alpha=0.01)
    assert not other.related and other.p_value > 0.05


def test_a_tampered_embedding_fingerprint_is_refused(embedding_fps, tmp_path):
    path = embedding_fps["embeddings"].save(tmp_path / "fp.safetensors")
    raw = bytearray(path.read_bytes())
    raw[-8:] = b"\x00" * 8
    path.write_bytes(bytes(raw))
    with pytest.raises(FileFormatError):
        emb.EmbeddingFingerprint.load(path)


@pytest.fixture(scope="session")
def served_encoder(derived_encoder):
    from fastapi import FastAPI

    app = FastAPI()
    for output in emb.ACCESS:
        app.mount(f"/{output}", create_app(derived_encoder, "enc", output, max_batch=64))
    url, stop = start(app)
    yield url
    stop()


@pytest.mark.parametrize("access", ["embeddings", "ranks"])
def test_an_encoder_served_over_http_is_verified_like_a_local_one(
    access, embedding_fps, derived_encoder, served_encoder
):
    fp = embedding_fps[access]
    with RemoteEncoder(f"{served_encoder}/{access}", "enc", access) as remote:
        remote_v = emb.verify(fp, remote, alpha=0.01)
    local_v = emb.verify(fp, derived_encoder, alpha=0.01)
    assert remote_v.related and abs(remote_v.score - local_v.score) < 1e-3


def test_the_encoder_server_rejects_bad_requests(served_encoder):
    url = f"{served_encoder}/embeddings/v2/models/enc/infer"
    bad = [
        {"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
        {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["only one"]}]},
        {"inputs": [{"name": "text", "shape": [65], "datatype": "BYTES", "data": ["x"] * 65}]},
        {"nothing": True},
    ]
    for body in bad:
        r = httpx.post(url, json=body)
        assert r.status_code == 400 and "error" in r.json(), body
    good = httpx.post(url, json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]})
    assert good.status_code == 200


def test_encoder_commands(tmp_path, minilm, tiny_encoders):
    nulls = [str(save_encoder(e, tmp_path / f"null{i}")) for i, e in enumerate(tiny_encoders[:3])]
    made = cli("zoo", "encoder", "minilm", "permute(1)->rotate(2)", "-o", str(tmp_path / "copy"))
    assert made.returncode == 0, made.stderr
    fp = tmp_path / "fp.safetensors"
    assert cli("extract", "minilm", "--scheme", "embeddings", "--budget", "32", "-o", str(fp)).returncode == 0
    calibrated = cli("calibrate", str(fp), *[a for n in nulls for a in ("--null", n)], "--fpr", "0.01")
    assert calibrated.returncode == 0, calibrated.stderr
    assert cli("verify", str(fp), str(tmp_path / "copy")).returncode == 0  # related
    assert cli("verify", str(fp), str(tmp_path / "null0")).returncode in (1, 3)  # not related or inconclusive
    bad = cli("zoo", "encoder", "minilm", "explode(1)", "-o", str(tmp_path / "x"))
    assert bad.returncode == 2 and "unknown encoder step" in bad.stderr and "Traceback" not in bad.stderr


def test_compare_command_on_vits(vits, zoo_cache):
    nulls = [a for s in range(1, 4) for a in ("--null", VIT.format(s))]
    args = ("--method", "units", "--cache", str(zoo_cache), *nulls)
    assert cli("compare", VIT.format(0), DISGUISED, *args).returncode == 0  # related
    assert cli("compare", VIT.format(0), VIT.format(4), *args).returncode in (1, 3)  # not related or inconclusive
    bad = cli("compare", VIT.format(0), DISGUISED, "--method", "unitz", "--cache", str(zoo_cache))
    assert bad.returncode == 2 and "--method must be one of" in bad.stderr and "Traceback" not in bad.stderr
