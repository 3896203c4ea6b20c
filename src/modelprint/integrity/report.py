"""The backdoor report: one self-contained HTML page for a scan or a diff, with the verdict, the reversed trigger
(its mask, and the trigger applied to clean inputs), every class's anomaly index and mask norm, and for a scan the
suspect's score among the clean models' scores with the threshold; plus what produced it."""

from __future__ import annotations

import html
import math
import sys
from pathlib import Path

import numpy as np

from ..verdict import Verdict, format_p


def figure(evidence: dict):
    """The flagged class's reversed trigger mask beside every class's mask norm (a matplotlib figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mask, norms = np.asarray(evidence["mask"], dtype=float), evidence["mask_norms"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2), layout="constrained")
    shown = mask if mask.ndim == 2 else mask.reshape(1, -1)
    left.imshow(shown, cmap="magma", vmin=0, vmax=1, aspect="auto" if mask.ndim != 2 else "equal")
    left.set_title(f"reversed trigger mask, class {evidence['class']}")
    left.set_xticks([]), left.set_yticks([])
    colours = ["tab:red" if i == evidence["class"] else "tab:gray" for i in range(len(norms))]
    right.bar(range(len(norms)), norms, color=colours)
    right.set_xlabel("class"), right.set_ylabel("mask L1 norm"), right.set_title("smallest trigger per class")
    return fig


def _against_null(v: Verdict, null_scores) -> object:
    """The suspect's score among the clean models' scores, with the threshold when one is reachable."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 1.8), layout="constrained")
    null = np.asarray(null_scores, dtype=float)
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(null))
    ax.scatter(null, jitter, color="tab:gray", label=f"{len(null)} clean models")
    ax.scatter([v.score], [0], color="tab:red", marker="D", s=60, label="suspect")
    if math.isfinite(v.threshold):
        ax.axvline(v.threshold, color="black", linestyle="--", label=f"threshold (FPR {v.alpha:g})")
    ax.set_yticks([]), ax.set_ylim(-0.5, 0.5), ax.set_xlabel("detector score (higher: more likely backdoored)")
    ax.legend(loc="upper left", fontsize=8, frameon=False, ncol=3)
    return fig


def _indices(evidence: dict) -> object:
    import matplotlib.pyplot as plt

    index = evidence["anomaly_index"]
    fig, ax = plt.subplots(figsize=(8, 2.6), layout="constrained")
    ax.bar(
        range(len(index)), index, color=["tab:red" if i == evidence["class"] else "tab:gray" for i in range(len(index))]
    )
    ax.axhline(2, color="black", linestyle=":", label="the paper's fixed cut-off (2), not used: see the threshold")
    ax.set_xlabel("class"), ax.set_ylabel("anomaly index"), ax.legend(fontsize=8, frameon=False)
    return fig


def _verdict_table(v: Verdict) -> str:
    reach = f"{v.threshold:.4f}" if math.isfinite(v.threshold) else "none reachable"
    rows = [("outcome", v.summary()), ("score", f"{v.score:.4f}"), ("threshold", reach),
            ("p-value", format_p(v.p_value)), ("method", v.method), ("scheme", v.scheme),
            *(("warning", w) for w in v.warnings)]  # fmt: skip
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(x))}</td></tr>" for k, x in rows)
    return f"<h2>Verdict</h2><table>{cells}</table>"


def write(path: str | Path, v: Verdict, title: str, null_scores=None, clean=None) -> Path:
    """Write the report of ``v`` (a scan's or a diff's verdict, with Neural Cleanse's evidence) to ``path``.
    ``null_scores``: the clean models' scores a scan was decided against; ``clean``: a few clean inputs, shown
    with the reversed trigger applied."""
    from .. import __version__
    from ..bench.report import png, provenance, write_page

    sections = {"verdict": _verdict_table(v)}
    if "mask" in v.evidence:
        sections["trigger"] = f"<h2>Reversed trigger</h2>{png(figure(v.evidence))}"
        if clean is not None:
            sections["trigger"] += _stamped(v.evidence, clean)
    if "anomaly_index" in v.evidence:
        sections["classes"] = f"<h2>Anomaly index per class</h2>{png(_indices(v.evidence))}"
    if null_scores is not None:
        sections["null"] = f"<h2>Against clean models</h2>{png(_against_null(v, null_scores))}"
    sections["provenance"] = provenance({"command": " ".join(sys.argv), "modelprint": __version__})
    return write_page(Path(path), title, list(sections.values()), tuple(sections))


def _stamped(evidence: dict, x) -> str:
    """A few clean inputs with the reversed trigger applied (images of one channel; other inputs are read in the
    mask above)."""
    import matplotlib.pyplot as plt

    from ..bench.report import png

    x = np.asarray(x, dtype=float)
    if x.ndim != 4 or x.shape[1] != 1 or "pattern" not in evidence:
        return ""
    mask = np.asarray(evidence["mask"], dtype=float).reshape(x.shape[2:])
    x = (1 - mask) * x + mask * np.asarray(evidence["pattern"], dtype=float).reshape(x.shape[1:])
    fig, axes = plt.subplots(1, len(x), figsize=(1.4 * len(x), 1.6), layout="constrained", squeeze=False)
    for ax, img in zip(axes.flat, x, strict=True):
        ax.imshow(img[0], cmap="gray"), ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("clean inputs with the reversed trigger applied", fontsize=9)
    return png(fig)
