"""What verifying over HTTP costs: the Open Inference Protocol client against `modelprint serve`'s app on
localhost, compared with calling the model in-process.

    python benchmarks/remote.py [--cache DIR]

Prints the time per query (batches of 1 and of 64) in-process and over HTTP, and the wall time of a fingerprint
verification at budget 100 both ways.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from modelprint import data, serve
from modelprint.access import WhiteBox
from modelprint.fingerprint import calibrate, extract, verify
from modelprint.lineage import build_node
from modelprint.remote import RemoteModel


def per_query(model, x: torch.Tensor, batch: int, repeats: int) -> float:
    """Seconds per input, answering ``x`` in batches of ``batch``, best of ``repeats``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for chunk in x.split(batch):
            model.labels(chunk)
        best = min(best, time.perf_counter() - start)
    return best / len(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=Path(".zoo-cache"))
    args = ap.parse_args()
    torch.set_num_threads(1)  # leave a core to the server
    owner = build_node("train(cnn,digits,0)", cache_dir=args.cache).module
    direct = WhiteBox(owner, input_shape=(1, 8, 8))
    url, stop = serve.start(serve.create_app(direct, "owner"))
    remote = RemoteModel(url, "owner", batch_size=64)
    x = data.load("digits", "test").x[:256].float()

    print("time per query, ms        in-process    HTTP (localhost)    overhead")
    for batch in (1, 64):
        a, b = per_query(direct, x, batch, 3), per_query(remote, x, batch, 3)
        print(f"  batches of {batch:<3}          {1e3 * a:10.3f}    {1e3 * b:16.3f}    {1e3 * (b - a):8.3f}")

    fp = extract(owner, "AKH", "digits", budget=100, cache_dir=args.cache)
    nulls = [f"train({a},digits,{s})" for a in ("lenet", "mlp") for s in (4, 5)]
    fp = calibrate(fp, nulls, target_fpr=0.05, cache_dir=args.cache)
    for name, suspect in (("in-process", direct), ("HTTP", remote)):
        start = time.perf_counter()
        v = verify(fp, suspect)
        print(f"verify at budget 100, {name:10}: {time.perf_counter() - start:.3f} s ({v.summary()})")
    stop()


if __name__ == "__main__":
    main()
