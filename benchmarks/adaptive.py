"""Which fingerprints survive a suspect that answers unusual queries at random (``modelprint.adaptive``)?

    python benchmarks/adaptive.py [--schemes AKH,IPGuard,...] [--budget 100] [--cache DIR]

The owner is ``train(cnn,digits,0)``; the suspect a fine-tuned copy of it, plain and behind the filter (fitted
on the digits train split, 5% of genuine inputs flagged). Prints, per scheme: the share of its queries the
filter flags, and the verdict on the plain and the defended suspect; then what the defence costs in accuracy.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from modelprint import data
from modelprint.access import WhiteBox
from modelprint.adaptive import Adaptive
from modelprint.fingerprint import NAMED, calibrate, extract, verify
from modelprint.lineage import build_node

OWNER, SUSPECT = "train(cnn,digits,0)", "train(cnn,digits,0)->finetune(1)"
NULLS = [f"train({a},digits,{s})" for a in ("lenet", "mlp", "resnet-tiny") for s in (4, 5)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--schemes", default=",".join(NAMED))
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--fpr", type=float, default=0.05, help="the filter's share of genuine inputs flagged")
    ap.add_argument("--cache", type=Path, default=Path(".zoo-cache"))
    args = ap.parse_args()
    owner = build_node(OWNER, cache_dir=args.cache).module
    suspect = build_node(SUSPECT, cache_dir=args.cache).module
    reference = data.load("digits", "train").x
    test = data.load("digits", "test")

    plain = WhiteBox(suspect, input_shape=(1, 8, 8))
    defended = Adaptive(plain, reference, fpr=args.fpr)
    accuracy = {n: float((m.labels(test.x.float()) == test.y).float().mean()) for n, m in
                (("plain", plain), ("defended", defended))}  # fmt: skip
    print(f"{'scheme':12} {'flagged':>8}  {'plain: p-value':>16}  {'defended: p-value':>18}  seconds")
    for name in args.schemes.split(","):
        start = time.perf_counter()
        fp = calibrate(extract(owner, name, "digits", budget=args.budget, cache_dir=args.cache), NULLS,
                       target_fpr=0.05, cache_dir=args.cache)  # fmt: skip
        x = fp.queries.float()
        flagged = float(defended.suspicious(x, plain.probs(x)).float().mean())
        verdicts = []
        for model in (WhiteBox(suspect, input_shape=(1, 8, 8)), Adaptive(plain, reference, fpr=args.fpr)):
            v = verify(fp, model)
            verdicts.append(f"{'yes' if v.related else 'NO':>3} {v.p_value:11.2g}")
        print(f"{name:12} {flagged:8.2f}  {verdicts[0]:>16}  {verdicts[1]:>18}  {time.perf_counter() - start:7.1f}")
    print(f"\ntest accuracy of the suspect: plain {accuracy['plain']:.3f}, defended {accuracy['defended']:.3f}")


if __name__ == "__main__":
    main()
