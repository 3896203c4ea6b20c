"""QuRD's table from QuRD's raw scores, through modelprint's metrics: TPR at 5% FPR and AUC per fingerprint and task
at 100 queries, and every cell QuRD's paper quotes next to ours. The raw scores are the ``generated/`` folder of
QuRD's repository (github.com/grodino/QuRD, commit d6f18d2; 5 seeds, about 660 MB; not shipped here).

    python benchmarks/qurd.py PATH/TO/generated [--budget 100]
"""

from __future__ import annotations

import argparse
import sys
import time

import pandas as pd

from modelprint.bench import qurd
from modelprint.errors import ModelprintError


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="QuRD's generated/ folder")
    ap.add_argument("--budget", type=int, default=100)
    args = ap.parse_args()
    t0 = time.perf_counter()
    try:
        scores = qurd.read(args.root, args.budget)
    except ModelprintError as e:
        sys.exit(f"error: {e}")
    t = qurd.table(scores)
    print(f"{len(scores)} scored pairs, {scores['seed'].nunique()} seeds, budget {args.budget}")
    tpr = t.assign(tpr=t["tpr"].round(2).astype(str) + t["at_zero"].map({True: "*", False: ""}))
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print("\nTPR at 5% FPR (* read at zero false positives: too few negatives for 5%)")
        print(tpr.pivot(index="fingerprint", columns="task", values="tpr").to_string())
        print("\nAUC")
        print(t.pivot(index="fingerprint", columns="task", values="auc").round(3).to_string())
    cited = t.set_index(["fingerprint", "task"])["tpr"]
    rows = [{"fingerprint": f, "task": k, "paper": v, "modelprint": round(float(cited.get((f, k), float("nan"))), 2)}
            for (f, k), v in qurd.PAPER.items()]  # fmt: skip
    cmp = pd.DataFrame(rows)
    print(f"\nthe paper's cells: {int((cmp.paper == cmp.modelprint).sum())}/{len(cmp)} reproduced")
    print(cmp.to_string(index=False))
    print(f"[{time.perf_counter() - t0:.0f}s]")


if __name__ == "__main__":
    main()
