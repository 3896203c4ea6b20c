"""Ownership beyond one owner: public fingerprint release (``modelprint.commitment``). An AKH fingerprint of a
digits CNN, calibrated on independent CNNs and LeNets, is committed; then, per budget: the size of the commitment
and of its openings (all queries, and the ``k`` a challenge draws), the time to commit, to open and to check an
opening against the root; and the verdicts through full and partial openings on derived models (the owner itself,
fine-tunes, a pruned copy) and on independent CNNs that no calibration saw.

    python benchmarks/ownership.py            # budgets 100 and 300, 20 null models, 10 independent suspects
    python benchmarks/ownership.py --quick    # budget 100, 10 null models, 4 independent suspects

Not yet measured here (issue 19's other parts): per-recipient copies and collusion tracing, proof of learning,
key-locked models and the perturbation defence.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

import modelprint as mp
from modelprint import commitment
from modelprint.lineage import build

OWNER, CHALLENGE = "train(cnn,digits,0)", "checker 2026-12-02"
DERIVED = [OWNER, f"{OWNER}->finetune(0)", f"{OWNER}->finetune(1)", f"{OWNER}->prune(0.5)"]


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    budgets, nulls, independent = ((100,), 10, 4) if args.quick else ((100, 300), 20, 10)
    t0 = time.perf_counter()
    null_models = [f"train({('cnn', 'lenet')[i % 2]},digits,{20 + i})" for i in range(nulls)]
    suspects = [(e, "derived") for e in DERIVED] + [(f"train(cnn,digits,{60 + i})", "independent")
                                                    for i in range(independent)]  # fmt: skip
    owner = build(OWNER)
    sizes, verdicts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for budget in budgets:
            fp = mp.calibrate(mp.extract(owner, "AKH", "digits", budget), null_models, 0.05)
            committed, t_commit = timed(commitment.commit, fp)
            public = committed.commitment
            public_size = public.save(folder / "c.commitment").stat().st_size
            openings = {"all": None, **{f"k={k}": k for k in (20, 50) if k < budget}}
            for name, k in openings.items():
                opening, t_open = timed(committed.open, k, None if k is None else CHALLENGE)
                size = opening.save(folder / "o.open").stat().st_size
                _, t_proof = timed(opening.proves, public)
                sizes.append({"budget": budget, "opening": name, "commitment bytes": public_size,
                              "opening bytes": size, "commit s": t_commit, "open s": t_open,
                              "check proofs s": t_proof})  # fmt: skip
                for expr, kind in suspects:
                    v, t_check = timed(commitment.check, public, opening, build(expr),
                                       challenge=None if k is None else CHALLENGE)  # fmt: skip
                    verdicts.append({"budget": budget, "opening": name, "suspect": kind, "model": expr,
                                     "related": v.related, "p": v.p_value, "outcome": v.outcome,
                                     "check s": t_check})  # fmt: skip
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"commitments ({nulls} null models; sizes in bytes, times in seconds)")
        print(pd.DataFrame(sizes).round(4).to_string(index=False))
        table = pd.DataFrame(verdicts)
        print("\nverdicts through the openings (related: TPR on derived models, FPR on independent ones)")
        print(table.groupby(["budget", "opening", "suspect"]).agg(
            models=("related", "size"), related=("related", "mean"), median_p=("p", "median"),
            inconclusive=("outcome", lambda o: (o == "inconclusive").mean()), check_s=("check s", "mean"),
        ).round(4).to_string())  # fmt: skip
    print(f"[{time.perf_counter() - t0:.0f}s]")


if __name__ == "__main__":
    main()
