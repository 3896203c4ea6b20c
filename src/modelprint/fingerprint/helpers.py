"""What a fingerprint is made with besides the owner: the data its queries come from (any form, resolved to
tensors and a dataset name) and the helper models some samplers contrast the owner with -- independent
reference models and surrogates extracted from the owner -- built by the lineage module unless given."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from .. import data as datasets
from ..access import Model, WhiteBox
from ..data.local import remember
from ..digest import module_digest, tensors_digest
from ..errors import ConfigError

Data = str | Dataset | tuple[torch.Tensor, torch.Tensor]


# Reference models (independent) and surrogates (label extractions of the owner) that samplers build on the
# owner's data, whatever its form. Their seeds are far from the small seeds users and benchmarks pick.
HELPER_ARCHS = ("lenet", "mlp", "resnet-tiny", "cnn")
REFERENCE_SEED, SURROGATE_SEED = 1001, 2001
# The surrogates' recipe is a thief's that no benchmark evaluates (augmented own inputs, SGD, 30 epochs): a
# fingerprint must not be tuned to the very attack it is scored on (tests/test_leakage.py enforces it).
SURROGATE_RECIPE = "queries=augment,optimizer=sgd,epochs=30"


def surrogate_step(arch: str, seed: int) -> str:
    """The lineage step that builds a default surrogate of the owner."""
    return f"label_extract({arch},{seed},{SURROGATE_RECIPE})"


def held_out(data: Data) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Candidate query inputs with their true labels, and a name for the fingerprint header. A registered
    dataset gives its test split (inputs the owner did not train on)."""
    if isinstance(data, str):
        ds = datasets.load(data, "test")
        return ds.x, ds.y, data
    if isinstance(data, tuple) and len(data) == 2:
        x, y = (torch.as_tensor(t) for t in data)
    elif isinstance(data, Dataset) and hasattr(data, "tensors"):
        x, y = data.tensors[:2]
    elif isinstance(data, Dataset):
        items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
        x, y = torch.stack([torch.as_tensor(a) for a, _ in items]), torch.as_tensor([int(b) for _, b in items])
    else:
        raise ConfigError(f"data must be a dataset name, a Dataset or (x, y) tensors, not {type(data).__name__}")
    if not x.is_floating_point() or y.ndim != 1 or len(x) != len(y) or y.is_floating_point():
        raise ConfigError(
            f"data must be float inputs (N, ...) and integer labels (N,), got {x.dtype} "
            f"{tuple(x.shape)} and {y.dtype} {tuple(y.shape)}"
        )
    x, y = x.float(), y.long()
    return x, y, remember(x.numpy(), y.numpy(), tensors_digest("", {"x": x, "y": y})[:16])


def training_set(data: Data) -> tuple[torch.Tensor, torch.Tensor, str]:
    """As ``held_out``, but a registered dataset gives its train split (the examples a model learnt from)."""
    if isinstance(data, str):
        ds = datasets.load(data, "train")
        return ds.x, ds.y, data
    return held_out(data)


def as_owner(owner: Model | nn.Module, x: torch.Tensor, device: str) -> Model:
    if isinstance(owner, Model):
        return owner
    if isinstance(owner, nn.Module):
        return WhiteBox(owner, input_shape=tuple(x.shape[1:]), device=device)
    raise ConfigError(f"the owner must be a torch module or a modelprint Model, not {type(owner).__name__}")


def helper_builders(owner: Model, dataset: str, references, surrogates, cache_dir, device):
    """Functions giving ``n`` reference models and ``n`` surrogates: the user's, or built by the lineage module."""
    from ..lineage import build, resolve, step
    from ..lineage.ops import Node

    def given(models: Sequence, kind: str) -> Callable[[int], list[nn.Module]]:
        def take(n: int) -> list[nn.Module]:
            if n > len(models):
                raise ConfigError(f"the sampler needs {n} {kind} but was given {len(models)}")
            out = [resolve(m, cache_dir=cache_dir, device=device) for m in models[:n]]
            if not all(isinstance(m, nn.Module) for m in out):
                raise ConfigError("reference and surrogate models must be torch modules")
            return out

        return take

    def built_refs(n: int) -> list[nn.Module]:
        return [
            build(f"train({HELPER_ARCHS[i % len(HELPER_ARCHS)]},{dataset},{REFERENCE_SEED + i})", cache_dir, device)
            for i in range(n)
        ]

    def built_surrogates(n: int) -> list[nn.Module]:
        out = []
        lineage = getattr(owner.module, "mp_lineage", None) if isinstance(owner, WhiteBox) else None
        cached = bool(lineage) and lineage.get("digest") == module_digest(owner.module)
        for i in range(n):
            arch, seed = HELPER_ARCHS[i % len(HELPER_ARCHS)], SURROGATE_SEED + i
            if cached:
                out.append(build(f"{lineage['expression']}->{surrogate_step(arch, seed)}", cache_dir, device))
            else:  # an owner the zoo did not build (or changed since): extract from it directly, not cached
                op = step(surrogate_step(arch, seed))
                module = owner.module if isinstance(owner, WhiteBox) else LabelsOf(owner)
                out.append(op.apply(Node(module, dataset), device=device).module)
        return out

    refs = given(references, "references") if references is not None else built_refs
    surr = given(surrogates, "surrogates") if surrogates is not None else built_surrogates
    return refs, surr


class LabelsOf(nn.Module):
    """A black-box owner (ONNX, a server, a callable) as a module that answers one-hot labels: all a label-only
    thief learns from it, so surrogates extract from it as from a white-box owner."""

    def __init__(self, model: Model):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(self.model.labels(x.cpu()), self.model.num_classes).float().to(x.device)
