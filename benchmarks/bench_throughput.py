"""Benchmark-runner throughput: scored pairs per second per scheme with the local executor at 1 and 2
workers and with Ray on this machine, where the time goes (building models, extracting fingerprints, loading
targets, scoring), and the time of a full digits-sac run.

    python benchmarks/bench_throughput.py [--cache DIR] [--full]

Each configuration runs the digits-sac demo profile (every black-box scheme, budget 100, seeds 0 and 1) into
a fresh folder over a warm model cache, so only the runner's own work is timed. --full also times the full
digits-sac benchmark (every black-box scheme, budgets 10, 20, 50, 100, seed 0) from the same cache.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from modelprint import bench
from modelprint.cli import BLACK_BOX_SCHEMES

CONFIGS = [("local", 1), ("local", 2), ("ray", 2)]


def timed_run(b, schemes, budgets, seeds, out, cache, executor, workers):
    t0 = time.perf_counter()
    df = bench.run(b, schemes, budgets, seeds, out, executor=executor, workers=workers, cache_dir=cache)
    return df, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", help="zoo cache folder (default: a temporary one, warmed first)")
    parser.add_argument("--full", action="store_true", help="also time the full digits-sac run")
    args = parser.parse_args()
    torch.set_num_threads(2)
    console = Console(width=200)
    schemes = list(BLACK_BOX_SCHEMES)
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or str(Path(tmp) / "zoo")
        demo = bench.load("digits-sac", "demo")
        t0 = time.perf_counter()  # warm the cache: models, references and surrogates
        bench.run(demo, schemes, [10], [0], Path(tmp) / "warm", cache_dir=cache)
        console.print(f"warm-up (builds the demo zoo, references and surrogates): {time.perf_counter() - t0:.0f}s")
        rows = {}
        for executor, workers in CONFIGS:
            try:
                df, wall = timed_run(
                    demo, schemes, [100], [0, 1], Path(tmp) / f"{executor}{workers}", cache, executor, workers
                )
            except Exception as e:  # e.g. Ray not installed
                console.print(f"{executor} x{workers}: skipped ({e})")
                continue
            rows[executor, workers] = (df, wall)
            if executor == "ray":
                import ray

                ray.shutdown()

        table = Table(title="scored pairs per second (digits-sac demo profile, budget 100, 2 seeds)")
        table.add_column("scheme")
        for executor, workers in rows:
            table.add_column(f"{executor} x{workers}", justify="right")
        for scheme in [*schemes, "all (wall clock)"]:
            cells = []
            for df, wall in rows.values():
                if scheme.startswith("all"):
                    cells.append(f"{len(df) / wall:.1f}")
                    continue
                d = df[df["scheme"] == scheme]
                units = d.drop_duplicates(["budget", "seed", "source"])
                work = units["extract_s"].sum() + d["load_s"].sum() + d["score_s"].sum()
                cells.append(f"{len(d) / work:.1f}")
            table.add_row(scheme, *cells)
        table.caption = "per scheme: pairs / worker-seconds spent on that scheme; last row: pairs / wall time"
        console.print(table)

        df, wall = rows["local", 1]
        units = df.drop_duplicates(["scheme", "budget", "seed", "source"])
        steps = {
            "extract fingerprints": units["extract_s"].sum(),
            "load targets": df["load_s"].sum(),
            "score pairs": df["score_s"].sum(),
        }
        steps["other (planning, writing parts)"] = wall - sum(steps.values())
        split = Table(title=f"where the time goes (local x1, {wall:.1f}s wall)")
        split.add_column("step")
        split.add_column("seconds", justify="right")
        split.add_column("share", justify="right")
        for k, v in sorted(steps.items(), key=lambda kv: -kv[1]):
            split.add_row(k, f"{v:.1f}", f"{v / wall:.0%}")
        console.print(split)
        per_scheme = units.groupby("scheme")["extract_s"].median().sort_values(ascending=False)
        console.print("median extraction per scheme (s): " + ", ".join(f"{k} {v:.2f}" for k, v in per_scheme.items()))

        if args.full:
            full = bench.load("digits-sac", "full")
            t0 = time.perf_counter()
            for m in full.models():
                bench.runner.build_model(full, m, cache, "cpu")
            built = time.perf_counter() - t0
            df, wall = timed_run(full, schemes, [10, 20, 50, 100], [0], Path(tmp) / "full", cache, "local", 2)
            console.print(
                f"full digits-sac: {len(full.models())} models built in {built:.0f}s (cold parts only); "
                f"{len(df)} pairs scored in {wall:.0f}s with 2 local workers"
            )


if __name__ == "__main__":
    main()
