"""The benchmark report: one self-contained HTML file (figures embedded as PNG) with the headline per scheme,
the task x scheme heatmaps, ROC curves per task, AUC against budget, timing per scheme, the summary table, and
the exact command and versions that produced the results."""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_file
from .metrics import headline, summarize, trivial_note
from .runner import read_scores

SECTIONS = ("summary", "heatmap", "roc", "budget", "timing", "provenance")
NA = "n/a"  # a metric the benchmark cannot resolve (TPR@F with fewer than 1/F negatives)


def cell(v, digits: int = 3) -> str:
    """A metric as text: rounded, or ``n/a`` where it is undefined."""
    return NA if pd.isna(v) else f"{v:.{digits}f}"


def metric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c in ("auc", "auc_std") or c.startswith("tpr@")]


def png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _grid(n: int, size: float = 3.2):
    import matplotlib.pyplot as plt

    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def heatmaps(summary: pd.DataFrame, budget: int) -> str:
    import matplotlib.pyplot as plt

    s = summary[summary["budget"] == budget]
    width = 3 + 0.7 * s["scheme"].nunique()
    fig, axes = plt.subplots(1, 2, figsize=(2 * width, 2 + 0.4 * s["task"].nunique()), layout="constrained")
    # TPR@1% needs 100 negatives; a smaller benchmark shows TPR at zero false positives, always defined
    tpr = "tpr@0.01" if s["tpr@0.01"].notna().any() else "tpr@0"
    for k, (ax, metric) in enumerate(zip(axes, ("auc", tpr), strict=True)):
        m = s.pivot(index="task", columns="scheme", values=metric)
        im = ax.imshow(m.to_numpy(float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(m.shape[1]), m.columns, rotation=45, ha="right")
        ax.set_yticks(range(m.shape[0]), m.index if k == 0 else [])
        for (i, j), v in np.ndenumerate(m.to_numpy(float)):
            ax.text(
                j,
                i,
                cell(v, 2),
                ha="center",
                va="center",
                color="black" if np.isnan(v) or v > 0.6 else "white",
                fontsize=8,
            )
        ax.set_title(f"{metric.upper()} at budget {budget}")
        fig.colorbar(im, ax=ax, fraction=0.04)
    return png(fig)


def roc_curves(scores: pd.DataFrame, budget: int) -> str:
    from sklearn.metrics import roc_curve

    df = scores[scores["budget"] == budget]
    tasks = sorted(df.loc[df["related"], "task"].unique())
    fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks, strict=False):
        for scheme, g in df.groupby("scheme"):
            keep = (g["related"] & (g["task"] == task)) | (~g["related"] & g["task"].isin(["", task]))
            y, s = g.loc[keep, "related"].to_numpy(), g.loc[keep, "score"].to_numpy(float)
            if y.all() or not y.any():
                continue
            f, t, _ = roc_curve(y, np.nan_to_num(s, nan=-1e300, neginf=-1e300))
            ax.plot(f, t, label=scheme, lw=1.2)
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
        ax.set(title=task, xlabel="FPR", ylabel="TPR", xlim=(-0.02, 1), ylim=(0, 1.02))
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"ROC per task, budget {budget} (sources and seeds pooled)")
    return png(fig)


def budget_curves(summary: pd.DataFrame) -> str:
    tasks = sorted(summary["task"].unique())
    budgets = sorted(int(b) for b in summary["budget"].unique())
    fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks, strict=False):
        for scheme, g in summary[summary["task"] == task].groupby("scheme"):
            g = g.sort_values("budget")
            ax.plot(g["budget"], g["auc"], "o-", label=scheme, lw=1.2, ms=3)
        ax.set(title=task, xlabel="queries", ylabel="AUC", ylim=(0, 1.02))
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(budgets, [str(b) for b in budgets])
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("AUC against query budget")
    return png(fig)


def timing(scores: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    import matplotlib.pyplot as plt

    units = scores.drop_duplicates(["scheme", "budget", "seed", "source"])
    t = pd.DataFrame(
        {
            "extract s (median)": units.groupby("scheme")["extract_s"].median(),
            "score ms per pair (median)": scores.groupby("scheme")["score_s"].median() * 1e3,
            "pairs": scores.groupby("scheme").size(),
        }
    )
    fig, axes = plt.subplots(1, 2, figsize=(10, 1 + 0.35 * len(t)), layout="constrained")
    for ax, col in zip(axes, t.columns[:2], strict=True):
        ax.barh(t.index, t[col])
        ax.set_title(col)
    axes[1].set_yticks(range(len(t)), [])
    return png(fig), t


def write(out: str | Path, path: str | Path | None = None) -> tuple[Path, pd.DataFrame]:
    """Write the report of the run in ``out`` (default ``out/report.html``); returns its path and the summary."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out)
    scores = read_scores(out)
    meta = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    summary = summarize(scores)
    budget = int(summary["budget"].max())
    timing_png, timing_table = timing(scores)
    fmt = {"formatters": dict.fromkeys(metric_columns(summary), cell), "na_rep": NA}  # NaN skips formatters
    top = summary[summary["budget"] == budget]
    head = headline(top).drop(columns="budget").set_index("scheme")
    note = trivial_note(top["task"])
    wide = top.pivot(index="task", columns="scheme", values="auc")
    parts = {
        "summary": f"<h2>Headline at budget {budget} (mean over non-trivial tasks)</h2>{head.to_html(**fmt)}"
        + (f"<p>{html.escape(note)}</p>" if note else "")
        + f"<h2>AUC at budget {budget} (rows: tasks)</h2>{wide.to_html(float_format=cell, na_rep=NA)}"
        f"<details><summary>every (scheme, budget, task)</summary>{summary.to_html(index=False, **fmt)}"
        "</details>",
        "heatmap": f"<h2>Task &times; scheme</h2>{heatmaps(summary, budget)}",
        "roc": f"<h2>ROC curves</h2>{roc_curves(scores, budget)}",
        "budget": f"<h2>AUC against budget</h2>{budget_curves(summary)}",
        "timing": f"<h2>Timing per scheme</h2>{timing_png}{timing_table.round(3).to_html()}",
        "provenance": provenance({**meta, "scored pairs": len(scores)}),
    }
    title = f"modelprint benchmark: {meta.get('benchmark', out.name)}"
    path = write_page(Path(path) if path else out / "report.html", title, [parts[k] for k in SECTIONS], SECTIONS)
    return path, summary


def provenance(meta: dict) -> str:
    """The provenance section: what produced the results, and when the report was written."""
    rows = {**meta, "report written": datetime.now(UTC).isoformat(timespec="seconds")}
    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td><code>{html.escape(str(v))}</code></td></tr>" for k, v in rows.items()
    )
    return f"<h2>Provenance</h2><table>{cells}</table>"


def write_page(path: Path, title: str, sections: list[str], ids: tuple[str, ...]) -> Path:
    """One self-contained HTML page of ``sections`` (HTML fragments), written atomically."""
    title = html.escape(title)
    body = "".join(f'<section id="{k}">{part}</section>' for k, part in zip(ids, sections, strict=True))
    doc = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}"
        f"</style></head><body><h1>{title}</h1>{body}</body></html>"
    )
    with atomic_file(path) as tmp:
        tmp.write_text(doc)
    return path
