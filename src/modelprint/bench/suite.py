"""Benchmarks: source models, their derived models grouped by task (positives), and independent models
(negatives), each named by a lineage expression or a model file. ``digits-sac`` and ``mnist1d-sac`` follow
QuRD's SACBench/ModelReuse protocol on our data; ``custom:PATH`` reads a user's own YAML or CSV listing."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..base import Registry
from ..errors import ConfigError

Profile = Literal["demo", "full"]
BENCHMARKS: Registry[Benchmark] = Registry("benchmark")
SHARED = ""  # the task of a negative that counts against every task


@dataclass(frozen=True)
class Target:
    """A model a source's fingerprint is scored against: a positive of ``task``, or a negative (``related``
    false) for every task (``task == ""``) or for one task only (e.g. models trained on a transfer dataset)."""

    model: str
    task: str
    related: bool


@dataclass(frozen=True)
class Benchmark:
    name: str
    dataset: str  # where fingerprints draw their queries from
    sources: tuple[str, ...]
    positives: dict[str, tuple[Target, ...]]  # source -> its derived models
    negatives: tuple[Target, ...]
    root: Path | None = field(default=None, compare=False)  # folder relative model paths are read from

    def targets(self, source: str) -> list[Target]:
        return [*self.positives.get(source, ()), *self.negatives]

    def models(self) -> list[str]:
        """Every model the benchmark needs, sources first."""
        out = list(self.sources) + [t.model for s in self.sources for t in self.targets(s)]
        return list(dict.fromkeys(out))

    def tasks(self) -> list[str]:
        return list(dict.fromkeys(t.task for s in self.sources for t in self.positives.get(s, ())))

    def resolve_path(self, model: str) -> str:
        """A relative model path of a custom benchmark, made relative to its file's folder."""
        if self.root is not None and "(" not in model and not Path(model).is_absolute():
            return str(self.root / model)
        return model


ARCHS = ("cnn", "lenet", "mlp", "resnet-tiny")
FULL_NEGATIVES = 100  # TPR@1%FPR needs at least 1/0.01 negatives per source (metrics.min_negatives)


def sac(dataset: str, source_archs: tuple[str, str], profile: Profile) -> Benchmark:
    """QuRD's SACBench and ModelReuse tasks on ``dataset``: every task of the attack zoo, extractions into
    architectures other than the source's, independent models of 4 architectures (the full profile tops them up
    to ``FULL_NEGATIVES`` with MLPs), and transfer negatives."""
    full = profile == "full"
    sources = [f"train({a},{dataset},0)" for a in (source_archs if full else source_archs[:1])]
    seeds = (1, 2, 3, 4) if full else (1, 2)
    positives = {}
    for src, arch in zip(sources, source_archs, strict=False):
        others = [a for a in ARCHS if a != arch][: 3 if full else 1]
        symmetries = ["permute(0)", "rescale(0)", "permute(1)->rescale(1)"]
        steps = {
            "same": [""],
            "finetune": ["finetune(0)", "finetune(1)"][: 2 if full else 1],
            "transfer": [f"transfer({dataset}-parity,0)", f"transfer({dataset}-c,0)"][: 2 if full else 1],
            "prune": ["prune(0.2)", "prune(0.5)", "prune(0.8)"] if full else ["prune(0.5)"],
            "fineprune": ["fineprune(0)"],
            "quantize": ["quantize(fp16)", "quantize(int8)"] if full else ["quantize(int8)"],
            "probit extraction": [f"distill({a},0)" for a in others],
            "label extraction": [f"label_extract({a},0)" for a in others],
            "adv label extraction": [f"adv_label_extract({a},0)" for a in others],
            "permute/rescale": symmetries if full else symmetries[-1:],
        }
        positives[src] = tuple(
            Target(f"{src}->{s}" if s else src, task, True) for task, ss in steps.items() for s in ss
        )
    negatives = [Target(f"train({a},{dataset},{s})", SHARED, False) for a in ARCHS for s in seeds]
    if full:  # top up with cheap independent MLPs; seeds from 100 stay clear of the ones used elsewhere
        extra = range(100, 100 + FULL_NEGATIVES - len(negatives))
        negatives += [Target(f"train(mlp,{dataset},{s})", SHARED, False) for s in extra]
    transfer = [f"{dataset}-parity", f"{dataset}-c"][: 2 if full else 1]
    negatives += [Target(f"train({a},{d},0)", "transfer", False) for d in transfer for a in ARCHS[: 2 if full else 1]]
    return Benchmark(f"{dataset}-sac", dataset, tuple(sources), positives, tuple(negatives))


@BENCHMARKS.register("digits-sac")
def digits_sac(profile: Profile = "full") -> Benchmark:
    return sac("digits", ("cnn", "resnet-tiny"), profile)


@BENCHMARKS.register("mnist1d-sac")
def mnist1d_sac(profile: Profile = "full") -> Benchmark:
    return sac("mnist1d", ("cnn", "mlp"), profile)


def load(name: str, profile: Profile = "full") -> Benchmark:
    """A benchmark by name (``digits-sac``, ``mnist1d-sac``) or a user's listing (``custom:PATH``)."""
    if profile not in ("demo", "full"):
        raise ConfigError(f"profile must be demo or full, got {profile!r}")
    if name.startswith("custom:"):
        return custom(Path(name[len("custom:") :]))
    return BENCHMARKS.make(name, profile)


def custom(path: Path) -> Benchmark:
    """A user's benchmark from a CSV (columns ``model,source,task``) or a YAML file (``dataset:`` and a
    ``models:`` list of the same keys). A row with task ``source`` is a source model named by its ``source``
    column; a row with a ``source`` is a derived model of that source; a row without one is a negative (for
    every task, or only for its ``task`` if it has one). Paths are relative to the file's folder."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such benchmark file")
    dataset = None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
            raise ConfigError(f"{path}: expected a mapping with a 'models:' list")
        dataset, rows = doc.get("dataset"), doc["models"]
    elif path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        raise ConfigError(f"{path}: a custom benchmark is a .csv or .yaml file")
    names: dict[str, str] = {}  # source name -> model
    derived: list[tuple[int, dict]] = []
    negatives: list[Target] = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not str(row.get("model") or "").strip():
            raise ConfigError(f"{path}: entry {i} has no 'model'")
        model, src, task = (str(row.get(k) or "").strip() for k in ("model", "source", "task"))
        if task == "source":
            names[src or model] = model
        elif src:
            derived.append((i, {"model": model, "source": src, "task": task or "derived"}))
        else:
            negatives.append(Target(model, "" if task in ("", "independent", "negative") else task, False))
        if row.get("dataset") and not dataset:
            dataset = str(row["dataset"])
    positives: dict[str, list[Target]] = {m: [] for m in names.values()}
    for i, d in derived:
        if d["source"] not in names:
            raise ConfigError(f"{path}: entry {i} names source {d['source']!r}, which no 'source' entry defines")
        positives[names[d["source"]]].append(Target(d["model"], d["task"], True))
    if not names or not negatives:
        raise ConfigError(f"{path}: a benchmark needs at least one source and one negative model")
    if not dataset:
        raise ConfigError(f"{path}: say which dataset the queries come from ('dataset:' or a 'dataset' column)")
    return Benchmark(
        f"custom:{path}",
        dataset,
        tuple(names.values()),
        {k: tuple(v) for k, v in positives.items()},
        tuple(negatives),
        root=path.parent,
    )
