"""Benchmark metrics as in QuRD: per source and task, the ROC of that task's positives against the negatives;
AUC and TPR at fixed false-positive rates, averaged over sources, then over seeds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from ..errors import ConfigError

REQUIRED = ("source", "target", "task", "related", "score")
KEYS = ("scheme", "budget", "seed")


def tpr_at(related: np.ndarray, score: np.ndarray, fpr: float) -> float:
    """TPR at the largest ROC point whose FPR is at most ``fpr`` (tied scores form one point)."""
    f, t, _ = roc_curve(related, score, drop_intermediate=False)
    return float(t[f <= fpr + 1e-12].max())


def per_source(scores: pd.DataFrame, fprs: Sequence[float] = (0.01, 0.05)) -> pd.DataFrame:
    """One row per (scheme, budget, seed, source, task): AUC and TPR@fpr over the task's positives and the
    source's negatives (those with an empty task count for every task, the others for their task only)."""
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
            s = np.nan_to_num(s, nan=-np.inf, neginf=-1e300, posinf=1e300)  # a failed comparison ranks last
            row = dict(zip([*KEYS, "source"], key, strict=True))
            row.update(task=task, auc=roc_auc_score(y, s), positives=len(pos), negatives=len(n))
            row.update({f"tpr@{f:g}": tpr_at(y, s, f) for f in fprs})
            rows.append(row)
    return pd.DataFrame(rows)


def summarize(scores: pd.DataFrame, fprs: Sequence[float] = (0.01, 0.05)) -> pd.DataFrame:
    """One row per (scheme, budget, task): ``auc``, ``tpr@F`` for each F in ``fprs`` (each averaged over
    sources, then seeds), ``auc_std`` (standard deviation of the per-source AUCs over sources and seeds),
    and how many sources, seeds, positives and negatives went in. ``scores`` has columns source, target, task,
    related, score (higher = more related), optionally scheme, budget, seed."""
    ps = per_source(scores, fprs)
    metrics = ["auc", *(f"tpr@{f:g}" for f in fprs)]
    if ps.empty:
        return pd.DataFrame(columns=[*KEYS, "task", *metrics, "auc_std", "sources", "seeds"])
    by_seed = ps.groupby(["scheme", "budget", "task", "seed"], sort=True)[metrics].mean()
    out = by_seed.groupby(["scheme", "budget", "task"], sort=True).mean()
    g = ps.groupby(["scheme", "budget", "task"], sort=True)
    out["auc_std"] = g["auc"].std(ddof=0)
    out["sources"] = g["source"].nunique()
    out["seeds"] = g["seed"].nunique()
    out["positives"] = g["positives"].sum()
    out["negatives"] = g["negatives"].sum()
    return out.reset_index()


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
