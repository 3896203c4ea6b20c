"""The watermark robustness benchmark (the Watermark-Robustness-Toolbox protocol): every scheme is embedded in
one source model, every attack of the lineage zoo is applied to the marked model, and each attacked model is
verified. An attack *succeeds* when the watermark is no longer detected and test accuracy fell by at most
5 points. Unmarked models (the source itself and independent ones) are verified too, as false-positive
controls. Results go to ``OUT/results.csv`` after every scheme; a rerun resumes."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from .. import data as datasets
from ..bench.runner import write_json
from ..errors import AccessError, ConfigError
from ..io import atomic_file, save_model
from ..lineage import build, build_node
from ..lineage.train import accuracy
from . import Key, calibrate, embed, make_watermark, verify

SCHEMES = ("trigger-set", "noise", "content", "unrelated", "frontier-stitching", "uchida", "deepsigns")
# name -> the lineage step applied to the marked model ({dataset} is the source's dataset)
ATTACKS = {
    "finetune": "finetune(0)",
    "transfer": "transfer({dataset}-c,0)",
    "prune-0.3": "prune(0.3)",
    "prune-0.6": "prune(0.6)",
    "prune-0.9": "prune(0.9)",
    "fineprune": "fineprune(0)",
    "quantize": "quantize(int8)",
    "distill": "distill(same,0)",
    "label-extract": "label_extract(same,0)",
    "permute": "permute(1)",
    "rescale": "rescale(1)",
}
MAX_DROP = 0.05  # WRT: an attack that costs more than 5 points of accuracy has not removed anything useful
COLUMNS = ["scheme", "attack", "kind", "expression", "accuracy", "accuracy_drop", "evidence", "threshold",
           "p_value", "alpha", "detected", "succeeded", "seconds"]  # fmt: skip


def _slug(spec: str) -> str:
    return re.sub(r"[^\w.-]+", "_", spec).strip("_")


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_file(path) as tmp:
        df.to_csv(tmp, index=False)


def _check(names: Sequence[str], known, what: str) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown {what} {', '.join(unknown)}; known: {', '.join(known)}")


def run(
    out: str | Path,
    source: str = "train(cnn,digits,0)",
    schemes: Sequence[str] = SCHEMES,
    attacks: Sequence[str] | Mapping[str, str] = tuple(ATTACKS),
    *,
    nulls: Sequence[str] | None = None,
    controls: Sequence[str] | None = None,
    epochs: int = 20,
    key_seed: int = 0,
    cache_dir=None,
    device: str = "cpu",
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Embed each scheme in ``source`` (a lineage expression), attack, verify; returns the outcome table (one row
    per scheme x attack, plus controls) and the embedding table (cost of each watermark). ``attacks``: names
    from ``ATTACKS``, or a mapping of your own names to lineage steps."""
    for spec in schemes:
        make_watermark(spec)  # fail on a typo before building anything
    if not isinstance(attacks, Mapping):
        _check(attacks, ATTACKS, "attack")
        attacks = {a: ATTACKS[a] for a in attacks}
    out = Path(out)
    (out / "marked").mkdir(parents=True, exist_ok=True)
    (out / "keys").mkdir(exist_ok=True)
    owner = build_node(source, cache_dir, device)
    dataset, test = owner.dataset, datasets.load(owner.dataset, "test")
    arch = (getattr(owner.module, "mp_config", None) or {}).get("arch", "mlp")
    nulls = (
        list(nulls)
        if nulls is not None
        else [f"train({a},{dataset},{4001 + i})" for i, a in enumerate([arch, "mlp"] * 4)]
    )
    controls = (
        list(controls)
        if controls is not None
        else [source, f"train({arch},{dataset},4101)", f"train(mlp,{dataset},4102)"]
    )
    meta = {"source": source, "dataset": dataset, "schemes": list(schemes), "attacks": dict(attacks),
            "nulls": nulls, "controls": controls, "epochs": epochs, "key_seed": key_seed, "device": device,
            "command": " ".join(sys.argv), "modelprint": __version__}  # fmt: skip
    write_json(out / "run.json", meta)

    done = pd.read_csv(out / "results.csv") if (out / "results.csv").exists() else pd.DataFrame(columns=COLUMNS)
    cost = pd.read_csv(out / "embedding.csv") if (out / "embedding.csv").exists() else pd.DataFrame()
    total = len(schemes) * (len(attacks) + len(controls) + 1)
    for n, spec in enumerate(schemes):
        name = make_watermark(spec).spec().removesuffix("()")
        folder, key_path = (out / "marked" / _slug(name)).resolve(), out / "keys" / f"{_slug(name)}.key"
        base = f"load({folder},{dataset})"
        jobs = [("none", "attack", base)]
        jobs += [(a, "attack", f"{base}->{step.format(dataset=dataset)}") for a, step in attacks.items()]
        jobs += [("control", "control", c) for c in controls]
        finished = set(done.loc[done["scheme"] == name, "expression"])
        jobs = [j for j in jobs if j[2] not in finished]
        step = (n + 1) * total // len(schemes) - len(jobs)
        if not jobs:
            continue
        if key_path.exists() and folder.exists():
            key = Key.load(key_path)
        else:
            if progress:
                progress(f"{name}: embedding", step, total)
            t0 = time.perf_counter()
            marked, key = embed(owner.module, spec, dataset, key_seed, epochs=epochs, device=device)
            seconds = time.perf_counter() - t0
            if key.chance is None and key.null is None:
                key = calibrate(key, nulls, cache_dir=cache_dir, device=device)
            save_model(marked, folder, meta={"watermark": name})
            key.save(key_path)
            row = {"scheme": name, "key_size": len(key.labels), "embed_seconds": seconds,
                   "train_seconds": owner.meta.get("seconds", np.nan), "accuracy_before": owner.test_accuracy,
                   "accuracy_after": accuracy(marked, test.x, test.y, device=device)}  # fmt: skip
            row["accuracy_cost"] = row["accuracy_before"] - row["accuracy_after"]
            cost = pd.concat([cost[cost.get("scheme", pd.Series(dtype=str)) != name], pd.DataFrame([row])])
            _write_csv(cost, out / "embedding.csv")
        reference = _Reference(base, key.num_classes, cache_dir, device)
        new = []
        for i, (attack, kind, expr) in enumerate(jobs):
            if progress:
                progress(f"{name}: {attack if kind == 'attack' else expr}", step + i, total)
            t0 = time.perf_counter()
            built = build_node(expr, cache_dir, device)
            drop = reference.accuracy(built.dataset) - built.test_accuracy if kind == "attack" else np.nan
            try:
                v = verify(key, built.module, device=device)
                found = [v.score, v.threshold, v.p_value, key.target_fpr, v.related]
            except AccessError:  # a white-box key whose layer the attack removed or reshaped: nothing to read
                found = [np.nan, np.nan, 1.0, key.target_fpr, False]
            succeeded = attack not in ("none", "control") and not found[-1] and not drop > MAX_DROP
            values = [name, attack, kind, expr, built.test_accuracy, drop, *found, succeeded, time.perf_counter() - t0]
            new.append(dict(zip(COLUMNS, values, strict=True)))
        done = pd.concat([done, pd.DataFrame(new, columns=COLUMNS)], ignore_index=True)
        _write_csv(done, out / "results.csv")
    if progress:
        progress("done", total, total)
    return done, cost


class _Reference:
    """The marked model's test accuracy per task, against which an attack's accuracy drop is measured (NaN for
    a task with another label set: the attacker changed the task, so there is no drop to compare)."""

    def __init__(self, expr: str, num_classes: int, cache_dir, device: str):
        self.expr, self.num_classes, self.cache_dir, self.device = expr, num_classes, cache_dir, device
        self.known: dict[str, float] = {}

    def accuracy(self, dataset: str) -> float:
        if dataset not in self.known:
            test = datasets.load(dataset, "test")
            same = test.num_classes == self.num_classes
            model = build(self.expr, self.cache_dir, self.device) if same else None
            self.known[dataset] = accuracy(model, test.x, test.y, device=self.device) if same else np.nan
        return self.known[dataset]


def outcome_grid(results: pd.DataFrame) -> str:
    """Scheme x attack: the watermark evidence as a fraction of the way from the detection threshold to a full
    match, each cell marked kept, removed (attack succeeded) or broken (removed, but accuracy fell > 5 points)."""
    import matplotlib.pyplot as plt

    from ..bench.report import png

    r = results[results["kind"] == "attack"].copy()
    r["label"] = np.where(r["detected"], "kept", np.where(r["succeeded"], "REMOVED", "broken"))
    ev = r.pivot(index="scheme", columns="attack", values="evidence")
    order = list(dict.fromkeys(r["attack"]))
    schemes = list(dict.fromkeys(r["scheme"]))  # run order, not alphabetical
    ev = ev.loc[schemes, order]
    label = r.pivot(index="scheme", columns="attack", values="label").loc[schemes, order]
    fig, ax = plt.subplots(figsize=(2 + 0.9 * len(order), 1.2 + 0.5 * len(ev)), layout="constrained")
    im = ax.imshow(ev.to_numpy(float), vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(order)), order, rotation=40, ha="right")
    ax.set_yticks(range(len(ev)), ev.index)
    for (i, j), v in np.ndenumerate(ev.to_numpy(float)):
        ax.text(j, i, f"{'-' if np.isnan(v) else f'{v:.2f}'}\n{label.iat[i, j]}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.03, label="key match rate (bits for uchida)")
    return png(fig)


def drop_vs_evidence(results: pd.DataFrame) -> str:
    """Each attack as a point: accuracy drop against watermark p-value; the WRT success region shaded."""
    import matplotlib.pyplot as plt

    from ..bench.report import png

    r = results[(results["kind"] == "attack") & (results["attack"] != "none")]
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for scheme, g in r.groupby("scheme", sort=False):
        ax.scatter(g["accuracy_drop"] * 100, np.clip(g["p_value"].astype(float), 1e-30, 1), label=scheme, s=22)
    ax.set_yscale("log")
    ax.set_ylim(3e-31, 3)
    ax.axvspan(ax.get_xlim()[0], MAX_DROP * 100, color="#eee", zorder=-1)
    ax.axhline(float(r["alpha"].max()), color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("test-accuracy drop (points)")
    ax.set_ylabel("watermark p-value (clipped at 1e-30)")
    ax.set_title("an attack succeeds in the shaded band above the dashed line (p > alpha)", fontsize=10)
    ax.legend(fontsize=7)
    return png(fig)


def report(out: str | Path, path: str | Path | None = None) -> Path:
    """The self-contained HTML report of the run in ``out`` (default ``out/report.html``)."""
    import matplotlib

    from ..bench.report import provenance, write_page

    matplotlib.use("Agg")
    out = Path(out)
    if not (out / "results.csv").exists():
        raise ConfigError(f"{out}: no results.csv (run `modelprint watermark bench -o {out}` first)")
    results = pd.read_csv(out / "results.csv")
    cost = pd.read_csv(out / "embedding.csv") if (out / "embedding.csv").exists() else pd.DataFrame()
    meta = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    attacks = results[(results["kind"] == "attack") & (results["attack"] != "none")]
    removed = attacks.groupby("scheme", sort=False).agg(
        removed_by=("succeeded", lambda s: ", ".join(attacks.loc[s.index[s], "attack"]) or "none"),
        attacks_survived=("detected", "sum"),
        attacks=("detected", "size"),
    )
    controls = results[results["kind"] == "control"][["scheme", "expression", "evidence", "p_value", "detected"]]
    sections = {
        "outcomes": "<h2>Attack outcomes</h2><p>REMOVED: the watermark is no longer detected and accuracy fell "
        f"at most {MAX_DROP:.0%} (the attack succeeded); broken: no longer detected, but the model lost more "
        f"accuracy than that.</p>{outcome_grid(results)}{removed.to_html()}",
        "tradeoff": f"<h2>Accuracy drop against evidence</h2>{drop_vs_evidence(results)}",
        "embedding": "<h2>Cost of embedding</h2>" + cost.round(4).to_html(index=False),
        "controls": "<h2>Unmarked models (false-positive controls)</h2>" + controls.to_html(index=False),
        "table": f"<h2>Every row</h2>{results.to_html(index=False, float_format='{:.4g}'.format)}",
        "provenance": provenance(meta),
    }
    return write_page(Path(path) if path else out / "report.html", "modelprint watermark robustness",
                      list(sections.values()), tuple(sections))  # fmt: skip
