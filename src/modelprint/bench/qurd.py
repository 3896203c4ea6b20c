"""QuRD's raw scores as a benchmark frame, so that ``summarize`` reproduces QuRD's table (Godinot et al. 2025).

QuRD's experiments write one CSV per (seed, benchmark, dataset, sampler, split, budget, representation, distance):
``ROOT/<seed>/<benchmark>/<dataset>/<sampler>-<split>-<budget>/<representation>-<distance>.csv``, with columns
``value`` (a distance: lower is closer), ``source_model``, ``target_model``, ``dataset``, ``distance``,
``representation``, ``sampler``, ``split``, ``budget``. ``read(ROOT)`` labels every pair with QuRD's own rules:

- ModelReuse: a target whose expression extends the source's is a positive, its task the last step's name
  (``steal`` is label extraction, ``distill`` probit extraction, ``fineprune`` prune); a negative is a model
  trained from scratch, or one whose first step differs from the source's (siblings on the same pretrained model
  are left out), and counts against every ModelReuse task.
- SACBenchmark: positives likewise; the CIFAR10 models are negatives of every task but transfer, the CIFAR10-C
  ones of transfer only.

``table(scores)`` averages like QuRD: per source, then over the datasets of a benchmark equally, then seeds. A
task with fewer negatives than a false-positive rate resolves (transfer has 10) is read at zero false positives,
which is what QuRD's ROC gives there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import FileFormatError
from .metrics import summarize

# QuRD's fingerprints: (split, sampler, representation, distance) -> the name its paper gives
FINGERPRINTS = {
    ("test", "Negative", "Labels", "hamming"): "AKH",
    ("test", "Random", "Labels", "hamming"): "Random",
    ("train", "Boundary", "Labels", "hamming"): "IPGuard",
    ("train", "Adversarial", "DDV", "cosine"): "ModelDiff",
    ("train", "NegativeAugment", "SAC", "l2"): "SAC",
    ("train", "RandomSubsample100", "ZLIME", "l2"): "ZestOfLime",
}
TASK_NAMES = {"steal": "label_extraction", "distill": "probit_extraction", "fineprune": "prune"}
MODEL_REUSE_TASKS = ("same", "prune", "quantize", "label_extraction", "probit_extraction")
SAC_TASKS = ("adv_label_extraction", "prune", "finetune", "label_extraction", "probit_extraction", "same")
COLUMNS = ("value", "source_model", "target_model", "dataset", "distance", "representation", "sampler", "split")

# QuRD's paper, TPR at 5% FPR with 100 queries: the cells its text quotes
PAPER = {
    ("AKH", "prune"): 0.91, ("AKH", "probit_extraction"): 0.78, ("AKH", "label_extraction"): 0.46,
    ("AKH", "adv_label_extraction"): 0.92, ("IPGuard", "label_extraction"): 0.12,
    ("ModelDiff", "probit_extraction"): 0.59, ("Random", "transfer"): 0.48, ("Random", "quantize"): 0.93,
    ("SAC", "label_extraction"): 0.59, ("ZestOfLime", "transfer"): 0.78, ("ZestOfLime", "adv_label_extraction"): 0.29,
}  # fmt: skip


def read(root: str | Path, budget: int = 100) -> pd.DataFrame:
    """Every scored pair of QuRD's fingerprints at ``budget`` under ``root``, one row per pair and task it counts
    for: columns scheme (``"<fingerprint>|<dataset>"``), budget, seed, source, target, task, related, score
    (``1 - value``)."""
    root = Path(root)
    frames = []
    for (split, sampler, representation, distance), name in FINGERPRINTS.items():
        for path in sorted(root.glob(f"*/*/*/{sampler}-{split}-{budget}/{representation}-{distance}.csv")):
            seed, benchmark = path.relative_to(root).parts[:2]
            label = {"ModelReuse": _model_reuse, "SACBenchmark": _sac_benchmark}.get(benchmark)
            if label is None:
                continue
            pairs = label(_csv(path))
            frames.append(pd.DataFrame({
                "scheme": name + "|" + pairs["dataset"].astype(str), "budget": budget, "seed": seed,
                "source": pairs["source_model"], "target": pairs["target_model"], "task": pairs["task"],
                "related": pairs["related"], "score": 1 - pairs["value"],
            }))  # fmt: skip
    if not frames:
        raise FileFormatError(f"{root}: no QuRD scores at budget {budget} (expected <seed>/<benchmark>/...)")
    return pd.concat(frames, ignore_index=True)


def table(scores: pd.DataFrame, fpr: float = 0.05) -> pd.DataFrame:
    """One row per (fingerprint, task): ``auc`` and ``tpr`` at ``fpr``, averaged as QuRD does, and ``at_zero``
    (True where ``tpr`` was read at zero false positives for want of negatives)."""
    s = summarize(scores, fprs=(fpr,))
    s[["fingerprint", "dataset"]] = s["scheme"].str.split("|", n=1, expand=True)
    key = f"tpr@{fpr:g}"
    s["at_zero"] = s[key].isna()  # no source had min_negatives(fpr) negatives for the task
    s["tpr"] = s[key].fillna(s["tpr@0"])
    out = s.groupby(["fingerprint", "task"], sort=True).agg(auc=("auc", "mean"), tpr=("tpr", "mean"),
                                                            at_zero=("at_zero", "any"))  # fmt: skip
    return out.reset_index()


def _csv(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except Exception as e:  # parser, encoding and I/O errors alike
        raise FileFormatError(f"{path}: not a readable CSV ({type(e).__name__}: {e})") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise FileFormatError(f"{path}: lacks QuRD's column(s) {', '.join(missing)}")
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    if df["value"].isna().any():
        raise FileFormatError(f"{path}: column value holds {int(df['value'].isna().sum())} non-numeric entries")
    return df


def _last_step(source: pd.Series, target: pd.Series) -> np.ndarray:
    """The task of each pair: "same", the name of the step the target adds to its source, or "" if unrelated."""
    derived = [t.startswith(s + "->") for s, t in zip(source, target, strict=True)]
    step = target.str.rsplit("->", n=1).str[-1].str.split("(").str[0].replace(TASK_NAMES)
    return np.where(target == source, "same", np.where(derived, step, ""))


def _explode(df: pd.DataFrame, task: np.ndarray, negative_tasks) -> pd.DataFrame:
    """One row per pair and task: a positive for its own task, a negative for each of ``negative_tasks(row)``."""
    tasks = [[t] if t else negative_tasks(r) for t, r in zip(task, df.itertuples(), strict=True)]
    return df.assign(related=task != "", task=tasks).explode("task", ignore_index=True)


def _model_reuse(df: pd.DataFrame) -> pd.DataFrame:
    task = _last_step(df["source_model"], df["target_model"])
    first = df["target_model"].str.split("->").str[0] != df["source_model"].str.split("->").str[0]
    keep = (task != "") | df["target_model"].str.startswith("train") | first
    return _explode(df[keep], task[keep.to_numpy()], lambda _: list(MODEL_REUSE_TASKS))


def _sac_benchmark(df: pd.DataFrame) -> pd.DataFrame:
    task = _last_step(df["source_model"], df["target_model"])
    return _explode(df, task, lambda r: ["transfer"] if "cifar10C" in r.target_model else list(SAC_TASKS))
