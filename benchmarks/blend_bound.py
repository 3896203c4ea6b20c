"""How far can a choice of blends go? An upper bound for the label-only fingerprints that ask about mixup/CutMix
blends of held-out inputs (Divergent, Preference, Preference-rare), against the thieves of
``benchmarks/generalization.py`` (its zoo, built or reused from ``--out``).

Every model of the zoo labels one fixed pool of blends. For each extraction recipe, an oracle chooses the queries
with that recipe's own students: with half of them and half of the independent negatives, the blends those
students answer as the owner does and those negatives do not (the students' agreement with the owner less
``contrast`` times the negatives'). The other halves are then scored with Preference-rare's statistic: the
suspect's preference for the owner's labels over those of the reference nearest to it (48 references). No
fingerprint knows a thief's students, so where even the oracle stays below the target, no choice of blends at
this budget reaches it: that thief needs another kind of query, or more than hard labels. Next to the oracle, on
the same pool and splits: Preference-rare's own choice (the surrogates of the other recipes less twice the
references, leave-one-recipe-out).

TPR is the share of held-out students that score above every held-out negative (0 false positives among half the
negatives: 51 at the full profile), the mean over ``--splits`` random halvings.

    python benchmarks/blend_bound.py                               # digits and mnist1d, budget 100
    python benchmarks/blend_bound.py --datasets mnist1d --out generalization-out   # that benchmark's zoo
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from generalization import OWNERS, Zoo

from modelprint.access import WhiteBox
from modelprint.bench import thieves
from modelprint.fingerprint import REPRESENTATIONS
from modelprint.fingerprint.helpers import held_out, helper_builders
from modelprint.fingerprint.queries import blends

NEAREST = REPRESENTATIONS.from_spec("preference(against=nearest)")


def labels(models: list, x: torch.Tensor, device: str) -> np.ndarray:
    with torch.no_grad():
        return np.stack([WhiteBox(m, device=device).labels(x).numpy() for m in models])


def preference_rare(answers: np.ndarray, own: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Each model's (rows of ``answers``) score as Preference-rare's representation gives it, less the constant
    the owner's adds: its mean preference for the owner's labels over its nearest reference's."""
    aux = {"owner": torch.from_numpy(own), "references": torch.from_numpy(refs.T.copy())}
    return np.array([float(NEAREST(torch.from_numpy(a), aux, 0).mean()) for a in answers])


def choose(score: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    return np.argsort(-(score + rng.random(len(score)) * 1e-6))[:budget]  # random order among ties


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=",".join(OWNERS))
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--pool", type=int, default=20_000, help="blends every model labels")
    ap.add_argument("--students", type=int, default=9, help="per extraction recipe (at least 4: halves of 2)")
    ap.add_argument("--references", type=int, default=48)
    ap.add_argument("--contrasts", default="1,2,4", help="the oracle's weights on the negatives' agreement")
    ap.add_argument("--splits", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("generalization-out"), help="its zoo/ is reused and extended")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.students < 4:
        ap.error("--students must be at least 4")
    contrasts = [float(c) for c in args.contrasts.split(",")]
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", flush=True)

    cache = args.out / "zoo"
    rows = []
    for ds in args.datasets.split(","):
        zoo = Zoo.build(ds, args.students, 34, cache, args.device, log)
        refs = helper_builders(WhiteBox(zoo.owner), ds, None, None, cache, args.device)[0](args.references)
        x = blends(held_out(ds)[0], args.pool, 0.5, torch.Generator().manual_seed(0))  # as Divergent draws them
        own = labels([zoo.owner], x, args.device)[0]
        R = labels(refs, x, args.device)
        N = labels([m.module for m in zoo.negatives], x, args.device)
        S = {n: labels([m], x, args.device)[0] for n, m in zoo.surrogates.items()}
        log(f"{ds}: {len(refs) + len(N) + len(S) + 1} models labelled {len(x)} blends")
        rng = np.random.default_rng(0)
        for recipe in thieves.EXTRACTION:
            P = labels([zoo.positives[e] for e in zoo.tasks[recipe]], x, args.device)
            surr = np.stack([a for n, a in S.items() if n != recipe])
            rare = choose((surr == own).mean(0) - 2 * (R == own).mean(0), args.budget, rng)
            tpr: dict[str, list[float]] = {}
            for _ in range(args.splits):
                p, n = rng.permutation(len(P)), rng.permutation(len(N))
                (p_sel, p_ev), (n_sel, n_ev) = np.array_split(p, 2), np.array_split(n, 2)
                picks = {"Preference-rare": rare}
                for c in contrasts:
                    score = (P[p_sel] == own).mean(0) - c * (N[n_sel] == own).mean(0)
                    picks[f"oracle, contrast {c:g}"] = choose(score, args.budget, rng)
                for name, q in picks.items():
                    pos = preference_rare(P[p_ev][:, q], own[q], R[:, q])
                    neg = preference_rare(N[n_ev][:, q], own[q], R[:, q])
                    tpr.setdefault(name, []).append(float((pos > neg.max()).mean()))
            rows += [{"dataset": ds, "recipe": recipe, "choice": k, "tpr": np.mean(v)} for k, v in tpr.items()]
        log(f"{ds} done")
    table = pd.DataFrame(rows).pivot_table(index=["dataset", "recipe"], columns="choice", values="tpr", sort=False)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "blend_bound.csv")
    with pd.option_context("display.width", 200):
        print(f"TPR at 0 FPR over half the negatives, {args.budget} blends\n" + table.round(2).to_string())
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
