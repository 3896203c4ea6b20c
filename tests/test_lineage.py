import copy
import subprocess
import sys

import pytest
import torch
from torch import nn

from modelprint import data, make_net, symmetry
from modelprint.errors import ConfigError
from modelprint.lineage import build_node, normalize, parse
from modelprint.lineage.train import predict
from modelprint.nets import head, weight_layers

from .conftest import SOURCE


def logits(module, split="test", dataset="digits"):
    return predict(module, data.load(dataset, split).x)


def agreement(a, b):
    return float((logits(a).argmax(1) == logits(b).argmax(1)).float().mean())


def test_normalised_expressions():
    assert normalize("train( cnn , digits, 0 ) -> prune(0.50)") == "train(cnn,digits,0)->prune(0.5)"
    assert normalize("train(arch=cnn,dataset=digits,seed=0)") == "train(cnn,digits,0)"
    assert normalize("train(cnn,digits,0,lr=0.01)") == "train(cnn,digits,0)"  # a default is not a difference
    assert normalize("train(cnn,digits,0,epochs=3)") == "train(cnn,digits,0,epochs=3)"
    assert normalize('load("my dir/m,1", digits)->quantize(int8)') == 'load("my dir/m,1",digits)->quantize(int8)'


@pytest.mark.parametrize(
    "expr,message",
    [
        ("prune(0.5)", "must start with a source"),
        ("train(cnn,digits,0)->train(cnn,digits,1)", "cannot have train after a step"),
        ("train(cnn,digits,0)->explode(1)", "unknown lineage operation 'explode'"),
        ("train(cnn,digits,0)->prune(1.5)", "prune amount must be"),
        ("train(cnn,digits,0)->quantize(int4)", "fp16 or int8"),
        ("train(cnn,digits)", "bad arguments for lineage operation 'train'"),
        ("train(vgg,digits,0)", "unknown architecture 'vgg'"),
        ("train(cnn,digits,0", "unbalanced parenthesis"),
        ("", "empty"),
    ],
)
def test_bad_expressions(expr, message):
    with pytest.raises(ConfigError, match=message):
        parse(expr)


def test_source_reaches_target_accuracy(source):
    assert source.test_accuracy >= 0.97


@pytest.mark.parametrize("op", ["permute(0)", "rescale(0)", "permute(1)->rescale(2)"])
def test_symmetries_keep_the_function(zoo, source, op):
    derived = zoo(f"{SOURCE}->{op}").module
    assert torch.allclose(logits(derived, "all"), logits(source.module, "all"), atol=1e-5)
    changed = [not torch.equal(a, b) for a, b in zip(derived.parameters(), source.module.parameters(), strict=True)]
    assert sum(changed) >= len(changed) // 2


@pytest.mark.parametrize("arch", ["mlp", "lenet", "resnet-tiny", "cnn1d"])
def test_symmetries_on_every_architecture(arch):
    net = make_net(arch, (1, 40), 5)
    with torch.no_grad():  # non-trivial batch-norm statistics, so rescaling through norms is really tested
        for m in net.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
                m.weight.normal_()
    net.eval()
    x = torch.randn(32, 1, 40)
    y = net(x)
    for fn in (symmetry.permute, symmetry.rescale):
        assert torch.allclose(fn(copy.deepcopy(net), (1, 40), 3)(x), y, atol=1e-5)


def test_unsupported_layer_is_named():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.attn, self.fc2 = nn.Linear(4, 8), nn.MultiheadAttention(8, 2), nn.Linear(8, 2)

        def forward(self, x):
            h = self.fc1(x)
            return self.fc2(self.attn(h, h, h)[0])

    with pytest.raises(ConfigError, match="attn .*MultiheadAttention.* not supported"):
        symmetry.permute(Odd(), (4,), 0)


@pytest.mark.parametrize("amount", [0.2, 0.5, 0.8])
def test_prune_reaches_requested_sparsity(zoo, amount):
    module = zoo(f"{SOURCE}->prune({amount})").module
    weights = torch.cat([m.weight.flatten() for m in weight_layers(module)])
    assert abs(float((weights == 0).float().mean()) - amount) < 1e-4


def test_structured_prune_zeroes_whole_channels(zoo):
    module = zoo(f"{SOURCE}->prune(0.5,structured=true)").module
    _, last = head(module)
    for layer in weight_layers(module):
        if layer is not last:
            dead = (layer.weight.flatten(1) == 0).all(1)
            assert dead.float().mean() == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("mode", ["fp16", "int8"])
def test_quantize_runs_and_agrees(zoo, source, mode):
    module = zoo(f"{SOURCE}->quantize({mode})").module
    if mode == "fp16":
        assert next(module.parameters()).dtype == torch.float16
    else:
        for layer in weight_layers(module):  # at most 255 levels per output channel
            assert max(len(torch.unique(row)) for row in layer.weight.flatten(1)) <= 255
    assert agreement(module, source.module) >= 0.95


def test_finetune_and_fineprune(zoo, source):
    ft = zoo(f"{SOURCE}->finetune(1)")
    assert ft.test_accuracy >= 0.95
    assert any(not torch.equal(a, b) for a, b in zip(ft.module.parameters(), source.module.parameters(), strict=True))
    fp = zoo(f"{SOURCE}->fineprune(0,amount=0.5)")
    _, last = head(fp.module)
    assert float((last.weight == 0).all(0).float().mean()) == pytest.approx(0.5, abs=0.01)
    assert fp.test_accuracy >= 0.9


def test_transfer_to_new_label_set(zoo):
    built = zoo(f"{SOURCE}->transfer(digits-parity,0)")
    assert built.dataset == "digits-parity" and built.module.mp_config["num_classes"] == 2
    assert head(built.module)[1].out_features == 2 and built.test_accuracy > 0.85
    # ops after a transfer work on the new task
    assert zoo(f"{SOURCE}->transfer(digits-parity,0)->finetune(0)").dataset == "digits-parity"


def test_extraction_uses_only_the_parents_outputs(source, monkeypatch):
    """Scrambling the thief's true labels must not change the extracted model at all."""
    expr = f"{SOURCE}->label_extract(mlp,0,epochs=8)->distill(mlp,1,epochs=8)"
    honest = build_node(expr, cache_dir=False).module
    real_load = data.load

    def scrambled(name, split="train"):
        ds = real_load(name, split)
        if split == "attacker":
            ds.tensors = (ds.x, ds.y[torch.randperm(len(ds.y))])
        return ds

    monkeypatch.setattr(data, "load", scrambled)
    blind = build_node(expr, cache_dir=False).module
    assert all(torch.equal(a, b) for a, b in zip(honest.parameters(), blind.parameters(), strict=True))


@pytest.mark.parametrize("op", ["distill(lenet,0)", "label_extract(resnet-tiny,0)", "adv_label_extract(mlp,0)"])
def test_extractions_come_close_to_the_parent(zoo, source, op):
    built = zoo(f"{SOURCE}->{op}")
    assert built.module.mp_config["arch"] == op.split("(")[1].split(",")[0]
    assert built.test_accuracy >= source.test_accuracy - 0.05


def test_noise_is_relative_and_seeded(zoo, source):
    a, b = zoo(f"{SOURCE}->noise(0.1,0)").module, zoo(f"{SOURCE}->noise(0.1,1)").module
    w0, wa, wb = (head(m)[1].weight.detach() for m in (source.module, a, b))
    rel = float((wa - w0).std() / w0.std())
    assert 0.08 < rel < 0.12 and not torch.equal(wa, wb)


def test_cache_hit_returns_identical_weights(zoo_cache):
    expr = "train(mlp,digits,3,epochs=2)->prune(0.3)"
    first = build_node(expr, cache_dir=zoo_cache)
    second = build_node(expr, cache_dir=zoo_cache)
    assert not first.cached and second.cached
    for a, b in zip(first.module.state_dict().values(), second.module.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not list(zoo_cache.glob("*/.*.tmp"))  # no half-written entries left behind
    # the prefix was cached too, and a build without the cache is bit-identical (determinism)
    assert build_node("train(mlp,digits,3,epochs=2)", cache_dir=zoo_cache).cached
    fresh = build_node(expr, cache_dir=False).module
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), first.module.parameters(), strict=True))


def test_corrupt_cache_entry_is_rebuilt(zoo_cache):
    from modelprint.lineage import ZooCache

    expr = "train(mlp,digits,4,epochs=1)"
    build_node(expr, cache_dir=zoo_cache)
    weights = ZooCache(zoo_cache).path(expr) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    rebuilt = build_node(expr, cache_dir=zoo_cache)
    assert not rebuilt.cached and build_node(expr, cache_dir=zoo_cache).cached


def test_two_processes_share_one_cache(tmp_path):
    code = (
        "import sys; from modelprint.lineage import build_node; "
        "b = build_node('train(mlp,digits,5,epochs=2)', cache_dir=sys.argv[1]); print(b.cached)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(outs) == ["False", "True"]  # built once, loaded by the other
    assert len([p for p in tmp_path.glob("*/*") if p.is_dir()]) == 1


def test_load_from_a_file_and_notice_when_it_changes(tmp_path):
    from modelprint import save_model

    torch.manual_seed(0)
    save_model(make_net("mlp", (1, 8, 8), 10), tmp_path / "mine")
    expr = f'load("{tmp_path / "mine"}",digits)->prune(0.5)'
    first = build_node(expr, cache_dir=tmp_path / "cache")
    assert build_node(expr, cache_dir=tmp_path / "cache").cached
    torch.manual_seed(1)
    save_model(make_net("mlp", (1, 8, 8), 10), tmp_path / "mine")  # same path, other weights
    second = build_node(expr, cache_dir=tmp_path / "cache")
    assert not second.cached
    assert not torch.equal(head(first.module)[1].weight, head(second.module)[1].weight)
