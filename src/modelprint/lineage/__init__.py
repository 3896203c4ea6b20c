"""Model derivations by expression: ``build("train(cnn,digits,0)->finetune(1)->prune(0.5)")``.

Each step is an operation of the attack zoo (``ops.OPS``); built models are cached on disk by their
normalised expression, and every prefix of a chain is cached too, so siblings share their ancestors."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from .. import data
from ..digest import module_digest
from ..errors import ConfigError
from . import backdoor, thief  # noqa: F401  (register the backdoor and extraction operations)
from .cache import ZooCache, default_cache_dir
from .expr import parse_steps
from .ops import OPS, Node, Op
from .train import accuracy

__all__ = ["OPS", "Built", "Op", "ZooCache", "build", "build_node", "cache_keys", "normalize", "parse", "step"]


def parse(expr: str) -> list[Op]:
    """The operations of ``expr``, validated: a source first, transformations after it."""
    ops = []
    for i, (name, args, kwargs) in enumerate(parse_steps(expr)):
        op = OPS.make(name, *args, **kwargs)
        if op.source != (i == 0):
            where = "must start with a source (train or load)" if i == 0 else f"cannot have {name} after a step"
            raise ConfigError(f"{expr!r}: a lineage {where}")
        op.check()
        ops.append(op)
    return ops


def step(text: str) -> Op:
    """One transformation step, validated (``"finetune(0)"``)."""
    ops = [OPS.make(name, *args, **kwargs) for name, args, kwargs in parse_steps(text)]
    if len(ops) != 1 or ops[0].source:
        raise ConfigError(f"{text!r}: expected one transformation step")
    ops[0].check()
    return ops[0]


def prefixes(ops: list[Op]) -> list[str]:
    """The normalised expression of each prefix of a chain (the last one is the whole chain's)."""
    return ["->".join(op.spec() for op in ops[: i + 1]) for i in range(len(ops))]


def normalize(expr: str | list[Op]) -> str:
    """The canonical spelling of an expression."""
    return prefixes(parse(expr) if isinstance(expr, str) else expr)[-1]


def cache_keys(ops: list[Op]) -> list[str]:
    """The cache key of each prefix of a chain: its normalised expression, plus a digest of the content of the
    local files (models, datasets) its steps read, so that a changed file is never served from the cache."""
    keys, salt = [], ""
    for op, prefix in zip(ops, prefixes(ops), strict=True):
        digest = op.content_key()
        salt += f"#{digest}" if digest else ""
        keys.append(prefix + salt)
    return keys


@dataclass
class Built:
    """A built model with what the zoo table shows about it."""

    module: nn.Module
    expression: str
    dataset: str
    test_accuracy: float
    seconds: float  # time to build the last step (0 when loaded from cache)
    cached: bool
    meta: dict = field(default_factory=dict)


def build_node(expr: str, cache_dir: str | Path | None | bool = None, device: str = "cpu") -> Built:
    """Build (or load from the cache) the model of ``expr`` on ``device``. ``cache_dir=False`` disables the
    cache; ``None`` uses ``$MODELPRINT_CACHE`` or ``~/.cache/modelprint/zoo``."""
    ops = parse(expr)
    names, keys = prefixes(ops), cache_keys(ops)
    cache = None if cache_dir is False else ZooCache(default_cache_dir() if cache_dir is None else cache_dir)
    node, meta, start = None, {}, 0
    if cache is not None:  # resume from the longest cached prefix
        for i in range(len(ops) - 1, -1, -1):
            if (hit := cache.get(keys[i], device)) is not None:
                node, meta, start = Node(hit[0], hit[1]["dataset"]), hit[1], i + 1
                break
    seconds, cached = 0.0, start == len(ops)
    for i in range(start, len(ops)):
        if cache is None:
            node, meta, seconds = _apply(ops[i], node, names, i, device)
            continue
        with cache.lock(keys[i]):
            hit = cache.get(keys[i], device)  # another process may have built it meanwhile
            cached = hit is not None
            if cached:
                node, meta, seconds = Node(hit[0], hit[1]["dataset"]), hit[1], 0.0
            else:
                node, meta, seconds = _apply(ops[i], node, names, i, device)
                if getattr(node.module, "mp_config", None):  # a user's own class cannot be rebuilt from a folder
                    cache.put(keys[i], node.module, meta)
    return Built(node.module, names[-1], node.dataset, meta["test_accuracy"], seconds, cached, meta)


def _apply(op: Op, parent: Node | None, names: list[str], i: int, device: str) -> tuple[Node, dict, float]:
    t0 = time.perf_counter()
    node = op.apply(parent, device=device)
    seconds = time.perf_counter() - t0
    node.module = node.module.to(device).eval()
    test = data.load(node.dataset, "test")
    meta = {
        "expression": names[i],
        "parent": names[i - 1] if i else None,
        "operation": op.name,
        "dataset": node.dataset,
        "test_accuracy": accuracy(node.module, test.x, test.y, device=device),
        "seconds": round(seconds, 3),
    }
    return node, meta, seconds


def build(expr: str, cache_dir: str | Path | None | bool = None, device: str = "cpu") -> nn.Module:
    """The model of lineage expression ``expr`` (see ``build_node``)."""
    built = build_node(expr, cache_dir=cache_dir, device=device)
    # the digest tells later users (e.g. surrogate building) whether the module was changed since
    built.module.mp_lineage = {**built.meta, "digest": module_digest(built.module)}
    return built.module


def resolve(target, cache_dir: str | Path | None | bool = None, device: str = "cpu", **load_options):
    """A model given as a module or ``Model`` (returned as is), a file or folder ``load_model`` reads, a text
    encoder (``minilm``, or a Hugging Face BERT folder), or a lineage expression (built, or taken from the cache)."""
    from ..access import Model
    from ..io import load_model

    if isinstance(target, nn.Module | Model):
        return target
    path = Path(target)
    if str(target) == "minilm" or _encoder_folder(path):
        from ..transformer import load_encoder

        return load_encoder(target, device=device)
    if path.exists():
        return load_model(path, device=device, **load_options)
    if "(" not in str(target):
        raise ConfigError(f"{target}: no such model file, and not a lineage expression")
    return build(str(target), cache_dir=cache_dir, device=device)


def _encoder_folder(path: Path) -> bool:
    """A Hugging Face encoder's folder (its config names a model type), not a modelprint model folder."""
    import json

    try:
        return path.is_dir() and "model_type" in json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False


def resolve_model(target, input_shape, num_classes: int | None = None, cache_dir=None, device: str = "cpu"):
    """``target`` (see ``resolve``, or a callable answering labels) as a ``Model`` of ``input_shape``; a torch
    module is told ``num_classes`` so that it need not be probed."""
    from ..access import WhiteBox, as_model

    if isinstance(target, str | Path):
        target = resolve(target, cache_dir=cache_dir, device=device)
    if isinstance(target, nn.Module):
        return WhiteBox(target, num_classes=num_classes, input_shape=input_shape, device=device)
    return as_model(target, input_shape=input_shape)
