"""Benchmark metrics as in QuRD: per source and task, the ROC of that task's positives against the negatives;
AUC, TPR at zero false positives and TPR at fixed false-positive rates, averaged over sources, then over seeds;
and the headline, each scheme's average over the tasks that are not trivial."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from ..errors import ConfigError

REQUIRED = ("source", "target", "task", "related", "score")
KEYS = ("scheme", "budget", "seed")

# Tasks whose positives are the owner itself or a function-preserving transform of it (lineage ops permute and
# rescale; the sac benchmarks group them as "permute/rescale"): the suspect computes the owner's very function,
# so every black-box scheme scores them perfectly. They say nothing about robustness and would lift any average,
# so reports list them but keep them out of the headline.
TRIVIAL_TASKS = frozenset({"same", "permute", "rescale", "permute/rescale"})


def tpr_at(related: np.ndarray, score: np.ndarray, fpr: float) -> float:
    """TPR at the largest ROC point whose FPR is at most ``fpr`` (tied scores form one point)."""
    f, t, _ = roc_curve(related, score, drop_intermediate=False)
    return float(t[f <= fpr + 1e-12].max())


def min_negatives(fpr: float) -> int:
    """The fewest negatives that resolve a false-positive rate of ``fpr``: with fewer, one false positive is
    already above ``fpr``, so TPR@fpr would just be TPR at zero false positives. The tolerance keeps a rounded
    quotient (1 / (1/49) is 49.00000000000001 in floating point) from asking for one negative more."""
    return math.ceil(1 / fpr - 1e-9)


def per_source(scores: pd.DataFrame, fprs: Sequence[float] = (0.01, 0.05)) -> pd.DataFrame:
    """One row per (scheme, budget, seed, source, task): AUC, ``tpr@0`` (the fraction of positives scoring
    strictly above every negative) and ``tpr@F`` over the task's positives and the source's negatives (those with
    an empty task count for every task, the others for their task only). ``tpr@F`` is NaN when the source has
    fewer than ``min_negatives(F)`` negatives for the task."""
    if not all(0 < f <= 1 for f in fprs):
        raise ConfigError(f"false-positive rates must lie in (0, 1], got {list(fprs)} (tpr@0 is always reported)")
    df = _checked(scores)
    rows = []
    for key, g in df.groupby([*KEYS, "source"], sort=True, dropna=False):
        neg = g[~g["related"]]
        for task, pos in g[g["related"]].groupby("task", sort=True):
            n = neg[(neg["task"] == "") | (neg["task"] == task)]
            if n.empty:  # no ROC without negatives: this source says nothing about this task
                continue
            y = np.r_[np.ones(len(pos)), np.zeros(len(n))]
            s = np.r_[pos["score"].to_numpy(float), n["score"].to_numpy(float)]
            # a failed comparison (NaN) ranks last, below even -inf; all finite, as scikit-learn requires
            s = np.nan_to_num(s, nan=-np.finfo(float).max, neginf=-1e300, posinf=1e300)
            row = dict(zip([*KEYS, "source"], key, strict=True))
            row.update(task=task, auc=roc_auc_score(y, s), positives=len(pos), negatives=len(n))
            row["tpr@0"] = float((s[: len(pos)] > s[len(pos) :].max()).mean())  # a tie is not a detection
            row.update({f"tpr@{f:g}": tpr_at(y, s, f) if len(n) >= min_negatives(f) else np.nan for f in fprs})
            rows.append(row)
    return pd.DataFrame(rows)


def summarize(scores: pd.DataFrame, fprs: Sequence[float] = (0.01, 0.05)) -> pd.DataFrame:
    """One row per (scheme, budget, task): ``auc``, ``tpr@0`` and ``tpr@F`` for each F in ``fprs`` (each
    averaged over the sources where it is defined, then seeds; NaN where no source has enough negatives),
    ``auc_std`` (standard deviation of the per-source AUCs over sources and seeds), and how many sources, seeds,
    positives and negatives went in. ``scores`` has columns source, target, task, related, score (higher = more
    related), optionally scheme, budget, seed."""
    ps = per_source(scores, fprs)
    metrics = ["auc", "tpr@0", *(f"tpr@{f:g}" for f in fprs)]
    if ps.empty:
        return pd.DataFrame(columns=[*KEYS, "task", *metrics, "auc_std", "sources", "seeds"])
    by_seed = ps.groupby(["scheme", "budget", "task", "seed"], sort=True)[metrics].mean()  # mean skips NaN
    out = by_seed.groupby(["scheme", "budget", "task"], sort=True).mean()
    g = ps.groupby(["scheme", "budget", "task"], sort=True)
    out["auc_std"] = g["auc"].std(ddof=0)
    out["sources"] = g["source"].nunique()
    out["seeds"] = g["seed"].nunique()
    out["positives"] = g["positives"].sum()
    out["negatives"] = g["negatives"].sum()
    return out.reset_index()


def headline(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (scheme, budget) of a ``summarize`` table: each metric averaged over the tasks not in
    ``TRIVIAL_TASKS`` where it is defined, and how many tasks went in."""
    metrics = [c for c in summary.columns if c == "auc" or c.startswith("tpr@")]
    kept = summary[~summary["task"].isin(TRIVIAL_TASKS)]
    g = kept.groupby(["scheme", "budget"], sort=True)
    out = g[metrics].mean()
    out["tasks"] = g["task"].nunique()
    return out.reset_index()


def trivial_note(tasks) -> str:
    """The line a report prints under its headline: which of ``tasks`` it left out of the averages."""
    trivial = [t for t in dict.fromkeys(tasks) if t in TRIVIAL_TASKS]
    return f"trivial tasks ({', '.join(trivial)}) are listed but not averaged" if trivial else ""


def _checked(scores: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED if c not in scores.columns]
    if missing:
        raise ConfigError(f"scores table lacks column(s) {', '.join(missing)} (needs {', '.join(REQUIRED)})")
    df = scores.copy()
    for k, default in zip(KEYS, ("", 0, 0), strict=True):
        if k not in df.columns:
            df[k] = default
    df["task"] = df["task"].fillna("").astype(str)
    if df["related"].dtype != bool:
        try:
            df["related"] = df["related"].map(_as_bool)
        except ValueError as e:
            raise ConfigError(f"column related: {e}") from None
    return df


def _as_bool(v) -> bool:
    if isinstance(v, bool | np.bool_):
        return bool(v)
    text = str(v).strip().lower()
    if text in ("1", "true", "yes", "1.0"):
        return True
    if text in ("0", "false", "no", "0.0"):
        return False
    raise ValueError(f"cannot read {v!r} as true/false")
