"""How the registry's first cut scales: synthetic weight signatures (96 numbers, like real ones) in a SQLite
registry, searched with the FAISS index.

    python benchmarks/registry.py [--sizes 1000,10000,100000]

Prints, per size: the time to insert, to load and index the signatures (once per change of the registry), and
the median time of a nearest-100 query, which is what `registry search` pays per suspect before verifying.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from modelprint.registry import Registry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'signatures':>10}  {'insert s':>9}  {'index s':>8}  {'query ms (median of 50)':>24}  found")
    for n in map(int, args.sizes.split(",")):
        sigs = rng.normal(size=(n, 96)).astype(np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            registry = Registry(Path(tmp) / "r.db")
            start = time.perf_counter()
            registry.add_signatures([f"model-{i}" for i in range(n)], sigs)
            inserted = time.perf_counter() - start
            start = time.perf_counter()
            registry.nearest(sigs[0], 1)
            indexed = time.perf_counter() - start
            times, hits = [], 0
            for i in rng.integers(0, n, 50):
                start = time.perf_counter()
                found = registry.nearest(sigs[i] + 0.01 * rng.normal(size=96).astype(np.float32), 100)
                times.append(time.perf_counter() - start)
                hits += found[0][0] == i + 1
            registry.engine.dispose()
        print(f"{n:>10}  {inserted:9.2f}  {indexed:8.2f}  {1e3 * statistics.median(times):24.2f}  {hits}/50")


if __name__ == "__main__":
    main()
