"""Does detection generalize to thieves the detector never saw? Per dataset, an owner, its derived models built by
every extraction recipe and copy task of ``modelprint.bench.thieves`` (students of several architectures), and
independent negatives from the null bank's trainer (as many of the owner's architecture as of each other).
Fingerprints whose queries are chosen with surrogates (CAE, Divergent, Preference) are evaluated
leave-one-recipe-out: for extraction recipe R their surrogates are built with the other recipes only. Prints AUC,
TPR@1%FPR (n/a below 100 negatives), TPR@5%FPR and TPR at 0 FPR per scheme x task x budget (the mean over the
fingerprints' seeds, ``--seeds``: one draw of a sampler's queries can be lucky or unlucky), and the white-box
comparisons (``--whitebox``, both checkpoints; budget 0 in the table) per task, and writes generalization.csv
(the table) and scores.csv (every model's score, to study combinations of schemes).

    python benchmarks/generalization.py                 # digits and mnist1d, budgets 20/50/100, 102 negatives
    python benchmarks/generalization.py --quick         # digits, budget 100, 60 negatives, fewer students
    python benchmarks/generalization.py --datasets digits --budgets 100 --schemes Preference --students 9
    python benchmarks/generalization.py --datasets mnist1d --schemes Preference-rare --students 9 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

import modelprint as mp
from modelprint import nullbank
from modelprint.bench import thieves
from modelprint.bench.metrics import min_negatives, tpr_at
from modelprint.errors import ConfigError
from modelprint.fingerprint.comparisons import COMPARISONS
from modelprint.lineage import build
from modelprint.lineage.expr import split_top

OWNERS = {"digits": "lenet", "mnist1d": "cnn"}
STUDENTS = {"digits": ("lenet", "mlp", "cnn"), "mnist1d": ("cnn", "mlp", "cnn1d")}
SURROGATE_ARCHS = {"digits": ("mlp", "cnn", "lenet"), "mnist1d": ("mlp", "cnn1d", "cnn")}
SCHEMES = ("AKH", "SAC-w", "ModelDiff", "IPGuard", "ZestOfLIME", "FBI", "FBI-labels", "CAE", "Divergent", "Preference",
           "Preference-rare", "DeepFool", "UAP", "UAP-shift", "DeepJudge-RobD", "DeepJudge-JSD", "MetaV",
           "MetaV-datafree", "TAFA")  # fmt: skip
WHITE_BOX = ("matching", "barrier", "deepjudge", "gradients", "cka")  # modelprint.fingerprint.COMPARISONS
NEGATIVE_SEED = 80_000  # clear of the null bank's and the calibration benchmark's seeds


def score_rows(where: tuple, names: list[str], task: str, scores: np.ndarray) -> list[dict]:
    """One row per scored model: (dataset, scheme, budget, seed, held-out recipe), the model, its task ("" for an
    independent negative) and its score."""
    keys = dict(zip(("dataset", "scheme", "budget", "seed", "held_out"), where, strict=True))
    return [{**keys, "model": n, "task": task, "score": float(s)} for n, s in zip(names, scores, strict=True)]


def table_row(ds: str, scheme: str, budget: int, seed: int, task: str, pos, neg, leave_one_out: bool) -> dict:
    related = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    score = np.nan_to_num(np.r_[pos, neg], neginf=-1e300)  # a model the method cannot compare ranks last
    return {
        "dataset": ds, "scheme": scheme, "budget": budget, "seed": seed, "task": task,
        "kind": "extraction" if task in thieves.EXTRACTION else "copy",
        "positives": len(pos), "negatives": len(neg),
        "auc": roc_auc_score(related, score),
        "tpr@1%": tpr_at(related, score, 0.01) if len(neg) >= min_negatives(0.01) else np.nan,
        "tpr@5%": tpr_at(related, score, 0.05),
        "tpr@0": tpr_at(related, score, 0.0),
        "leave_one_out": leave_one_out,
    }  # fmt: skip


def white_box_scores(method: str, owner, models: list, ds: str, nulls: list) -> np.ndarray:
    """The white-box comparison's score of each model (DeepJudge's: the mean of its four layer similarities). A
    model it cannot compare (another architecture, for the methods that match units) scores -inf: missed."""
    compare = COMPARISONS[method][0]
    out = []
    for m in models:
        try:
            v = compare(owner, m, ds, None, null_models=nulls, alpha=0.05)
        except ConfigError:
            out.append(-np.inf)
            continue
        out.append(np.mean([e["score"] for e in v.evidence.values()]) if method == "deepjudge" else v.score)
    return np.array(out)


@dataclass
class Zoo:
    """A dataset's owner, its derived models per task (expressions), the independent negatives, and one surrogate
    per extraction recipe (recipe R's fingerprints get all but R's)."""

    owner: torch.nn.Module
    tasks: dict[str, list[str]]
    positives: dict[str, torch.nn.Module]
    negatives: list
    surrogates: dict[str, torch.nn.Module]

    @classmethod
    def build(cls, ds: str, students: int, negatives_per_arch: int, cache: Path, device: str, log) -> Zoo:
        src = f"train({OWNERS[ds]},{ds},0)"
        owner = build(src, cache_dir=cache, device=device)
        tasks: dict[str, list[str]] = {}
        for name, template in thieves.EXTRACTION.items():
            archs = [STUDENTS[ds][i % len(STUDENTS[ds])] for i in range(students)]
            tasks[name] = [f"{src}->{thieves.positive(template, a, 10 + i)}" for i, a in enumerate(archs)]
        for name, template in thieves.COPIES.items():
            tasks[name] = [f"{src}->{thieves.positive(template, '', s)}" for s in range(10, 10 + max(1, students - 1))]
        positives = {e: build(e, cache_dir=cache, device=device) for es in tasks.values() for e in es}
        log(f"{ds}: {len(positives)} derived models built")
        negs = nullbank.build(ds, 0.05, OWNERS[ds], count=negatives_per_arch, seed_base=NEGATIVE_SEED,
                              cache_dir=cache, device=device, progress=log)  # fmt: skip
        steps = thieves.surrogates_for("", SURROGATE_ARCHS[ds])
        surrogates = {n: build(f"{src}->{s}", cache_dir=cache) for n, s in zip(thieves.EXTRACTION, steps, strict=True)}
        return cls(owner, tasks, positives, negs, surrogates)


def save(rows: list[dict], scored: list[dict], out: Path) -> None:
    pd.DataFrame(rows).to_csv(out / "generalization.csv", index=False)
    pd.DataFrame(scored).to_csv(out / "scores.csv", index=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--datasets", default="")
    ap.add_argument("--budgets", default="")
    ap.add_argument("--schemes", default=",".join(SCHEMES))
    ap.add_argument("--whitebox", default=",".join(WHITE_BOX), help="white-box comparisons ('' for none)")
    ap.add_argument("--out", type=Path, default=Path("generalization-out"))
    ap.add_argument("--students", type=int, default=None,
                    help="students per extraction recipe, over the dataset's student architectures in turn (default "
                    "3, quick 2): each is 1/N of a cell's TPR")  # fmt: skip
    ap.add_argument("--seeds", default="0", help="comma-separated seeds of the fingerprints' queries (tables: means)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    datasets = args.datasets.split(",") if args.datasets else (["digits"] if args.quick else list(OWNERS))
    budgets = [int(b) for b in args.budgets.split(",")] if args.budgets else ([100] if args.quick else [20, 50, 100])
    negatives_per_arch, students = (20, 2) if args.quick else (34, 3)  # x 3 architectures: 60 or 102
    students = students if args.students is None else args.students
    seeds = [int(s) for s in args.seeds.split(",")]
    if students < 1:
        ap.error("--students must be at least 1")
    cache = args.out / "zoo"
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", flush=True)

    rows: list[dict] = []
    scored: list[dict] = []
    for ds in datasets:
        zoo = Zoo.build(ds, students, negatives_per_arch, cache, args.device, log)
        for scheme in split_top(args.schemes, ",") if args.schemes else []:  # a spelled scheme has commas inside
            uses_surrogates = getattr(mp.make_scheme(scheme).sampler, "surrogates", 0) > 0
            for budget, seed in ((b, s) for b in budgets for s in seeds):
                fps, negatives = {}, {}
                for task, exprs in zoo.tasks.items():
                    held = task if uses_surrogates and task in thieves.EXTRACTION else None
                    where = (ds, scheme, budget, seed, held)
                    if held not in fps:
                        surr = [m for n, m in zoo.surrogates.items() if n != held] if uses_surrogates else None
                        fps[held] = mp.extract(zoo.owner, scheme, ds, budget, seed, cache_dir=cache, device=args.device,
                                               surrogates=surr)  # fmt: skip
                        negatives[held] = np.array([mp.score(fps[held], m.module) for m in zoo.negatives])
                        scored += score_rows(where, [m.name for m in zoo.negatives], "", negatives[held])
                    fp, neg = fps[held], negatives[held]
                    pos = np.array([mp.score(fp, zoo.positives[e]) for e in exprs])
                    scored += score_rows(where, exprs, task, pos)
                    rows.append(table_row(ds, scheme, budget, seed, task, pos, neg, held is not None))
                save(rows, scored, args.out)
                log(f"{ds} {scheme} budget {budget} seed {seed} done")
        for method in filter(None, args.whitebox.split(",")):
            nulls = [m.module for m in zoo.negatives[:2]]  # the verdicts' nulls; only the raw scores are ranked here
            neg = white_box_scores(method, zoo.owner, [m.module for m in zoo.negatives], ds, nulls)
            where = (ds, method, 0, 0, None)  # budget 0, seed 0: no queries
            scored += score_rows(where, [m.name for m in zoo.negatives], "", neg)
            for task, exprs in zoo.tasks.items():
                pos = white_box_scores(method, zoo.owner, [zoo.positives[e] for e in exprs], ds, nulls)
                scored += score_rows(where, exprs, task, pos)
                rows.append(table_row(ds, method, 0, 0, task, pos, neg, False))
            save(rows, scored, args.out)
            log(f"{ds} {method} (white-box) done")
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 220, "display.max_rows", 2000):
        for title, col in (("AUC", "auc"), ("TPR@5%FPR", "tpr@5%"), ("TPR at 0 FPR", "tpr@0"), ("TPR@1%FPR", "tpr@1%")):
            if table[col].notna().any():  # TPR@1%FPR is n/a below 100 negatives
                wide = table.pivot_table(index=["dataset", "kind", "task"], columns=["scheme", "budget"], values=col)
                print(f"{title}\n" + wide.round(2).to_string() + "\n")
        print("mean over tasks (AUC)\n" + table.groupby(["dataset", "kind", "scheme", "budget"])["auc"].mean()
              .unstack(["scheme"]).round(3).to_string())  # fmt: skip
        if table["tpr@1%"].notna().any():  # the targets: every task's TPR@1%FPR, so its mean and its weakest task
            per_task = table.groupby(["dataset", "kind", "scheme", "budget", "task"])["tpr@1%"].mean()
            summary = per_task.groupby(["dataset", "kind", "scheme", "budget"]).agg(
                mean="mean", min="min", weakest=lambda t: t.idxmin()[-1]
            )
            print("\nTPR@1%FPR over tasks: mean, weakest\n" + summary.round(3).to_string())
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
