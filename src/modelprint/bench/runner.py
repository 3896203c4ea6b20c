"""The benchmark runner: every (scheme, budget, seed, source) is one unit of work that extracts a fingerprint
and scores it against the source's targets. Each finished unit is written as one Parquet part of the results
table (atomically), so a killed run resumes where it stopped and nothing is computed twice. Units run in this
process, in local worker processes (one torch thread each), or on a Ray cluster: the scores are the same."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd
import torch

from .. import __version__
from ..errors import AccessError, ConfigError
from ..io import atomic_file
from .suite import Benchmark

PARTS = "scores"  # folder of the results table's Parquet parts


@dataclass(frozen=True)
class Unit:
    scheme: str
    budget: int
    seed: int
    source: str

    @property
    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def plan(bench: Benchmark, schemes: Sequence[str], budgets: Sequence[int], seeds: Sequence[int]) -> list[Unit]:
    from ..fingerprint import make_scheme

    for s in schemes:
        make_scheme(s)  # a typo fails now, not after an hour of building
    for b in budgets:
        if b < 1:
            raise ConfigError(f"budgets must be positive, got {b}")
    return [Unit(s, b, seed, src) for s in schemes for b in budgets for seed in seeds for src in bench.sources]


def build_model(bench: Benchmark, model: str, cache_dir: str | None, device: str) -> str:
    """Build one model of the benchmark into the cache (a no-op for model files)."""
    if "(" in model:
        from ..lineage import build_node

        build_node(model, cache_dir=cache_dir, device=device)
    elif not Path(bench.resolve_path(model)).exists():
        raise ConfigError(f"{bench.name}: model file {model} does not exist")
    return model


def score_unit(bench: Benchmark, unit: Unit, cache_dir: str | None, device: str) -> pd.DataFrame:
    """Extract the unit's fingerprint from its source and score every target; one row per pair."""
    from ..fingerprint import extract, make_scheme, score

    def get(model: str):
        return _load(bench.resolve_path(model), cache_dir, device)

    scheme = make_scheme(unit.scheme)
    t0 = time.perf_counter()
    try:
        fp = extract(
            get(unit.source), scheme, bench.dataset, unit.budget, unit.seed, cache_dir=cache_dir, device=device
        )
    except AccessError as e:  # e.g. a scheme that needs gradients, on an ONNX source: one row says why
        return pd.DataFrame([{**asdict(unit), "scheme": scheme.label, "skipped": str(e)}])
    extract_s = time.perf_counter() - t0
    rows = []
    for t in bench.targets(unit.source):
        t0 = time.perf_counter()
        model = get(t.model)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            s = score(fp, model, device=device)
        except AccessError:  # e.g. a class-by-class scheme against a transfer to another label set
            s = float("-inf")
        rows.append(
            {
                **asdict(unit),
                "scheme": scheme.label,
                "target": t.model,
                "task": t.task,
                "related": t.related,
                "score": s,
                "score_s": time.perf_counter() - t0,
                "load_s": load_s,
                "extract_s": extract_s,
            }
        )
    return pd.DataFrame(rows)


@lru_cache(maxsize=32)
def _load(model: str, cache_dir: str | None, device: str):
    """Models a worker scores many times (every unit of a source meets the same targets), loaded once.
    Scoring never changes a model, so sharing them between units is safe."""
    from ..lineage import resolve

    return resolve(model, cache_dir=cache_dir, device=device)


def _worker_init() -> None:
    torch.set_num_threads(1)  # processes, not threads, share the cores


def _execute(fn: Callable, jobs: list[tuple], executor: str, workers: int, address: str | None) -> Iterator:
    """Yield ``(job, result)`` as jobs finish."""
    if executor == "ray":
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'modelprint[ray]'") from None
        if not ray.is_initialized():
            ray.init(
                address=address,
                num_cpus=None if address else workers,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
            )
        remote = ray.remote(num_cpus=1)(_ray_task)
        pending = {remote.remote(fn, *job): job for job in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            yield pending.pop(done[0]), ray.get(done[0])
    elif executor == "local" and workers <= 1:
        for job in jobs:
            yield job, fn(*job)
    elif executor == "local":
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = mp.get_context("spawn")  # torch and fork do not mix
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
            futures = {pool.submit(fn, *job): job for job in jobs}
            for f in as_completed(futures):
                yield futures[f], f.result()
    else:
        raise ConfigError(f"executor must be local or ray, got {executor!r}")


def _ray_task(fn: Callable, *args):
    _worker_init()
    return fn(*args)


def run(
    bench: Benchmark,
    schemes: Sequence[str],
    budgets: Sequence[int],
    seeds: Sequence[int],
    out: str | Path,
    *,
    executor: str = "local",
    workers: int = 1,
    address: str | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    progress: Callable[[str, int, int], None] | None = None,
) -> pd.DataFrame:
    """Score every unit of ``bench`` not yet in ``out``; return the whole results table."""
    out = Path(out)
    units = plan(bench, schemes, budgets, seeds)
    (out / PARTS).mkdir(parents=True, exist_ok=True)
    cache = None if cache_dir is None else str(cache_dir)
    write_json(
        out / "run.json",
        {
            "benchmark": bench.name,
            "dataset": bench.dataset,
            "schemes": list(schemes),
            "budgets": list(budgets),
            "seeds": list(seeds),
            "executor": executor,
            "workers": workers,
            "device": device,
            "command": " ".join(sys.argv),
            "modelprint": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    )
    todo = [u for u in units if not (out / PARTS / f"{u.key}.parquet").exists()]
    if todo:
        models = bench.models()
        for i, _ in enumerate(
            _execute(build_model, [(bench, m, cache, device) for m in models], executor, workers, address), 1
        ):
            if progress:
                progress("building models", i, len(models))
        for i, ((_, unit, *_), df) in enumerate(
            _execute(score_unit, [(bench, u, cache, device) for u in todo], executor, workers, address), 1
        ):
            _write_parquet(df, out / PARTS / f"{unit.key}.parquet")
            if progress:
                progress(f"{unit.scheme} @ {unit.budget}", i, len(todo))
    return read_scores(out)


def read_scores(out: str | Path) -> pd.DataFrame:
    """The results table of a run folder, in a stable order."""
    parts = sorted((Path(out) / PARTS).glob("*.parquet"))
    if not parts:
        raise ConfigError(f"{out}: no results yet (run: modelprint bench run BENCH -o {out})")
    df = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    if "skipped" in df:
        df = df[df["skipped"].isna()].drop(columns="skipped")
    return df.sort_values(["scheme", "budget", "seed", "source", "target"], kind="stable").reset_index(drop=True)


def skipped(out: str | Path) -> list[str]:
    """Why units of a run folder were skipped (a scheme that cannot fingerprint a source), one line each."""
    notes = []
    for p in sorted((Path(out) / PARTS).glob("*.parquet")):
        df = pd.read_parquet(p)
        if "skipped" in df:
            notes += [f"{r.scheme} @ {r.budget} on {r.source}: {r.skipped}" for r in df.itertuples()]
    return notes


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_file(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_json(path: Path, obj: dict) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))
