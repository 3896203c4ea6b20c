"""What changed between two models? Where their answers differ, described so a person can read it: which of
A's classes B now answers differently and with what, and a small decision tree over interpretable features of the
input (for images, the mean of each block of pixels; for signals, of each window; for tabular data, the features
themselves; and which class A answers) that separates the inputs they disagree on from those they agree on.

The inputs are the data's held-out split and mixup/CutMix blends of it: two models that agree on every natural
input can still differ between them, which is where a changed decision boundary shows first."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .access import Model, as_model
from .errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """A leaf of the tree: the conditions on the path to it, how many inputs fall there and on what share of
    them the models disagree."""

    conditions: tuple[str, ...]
    inputs: int
    disagree: float

    def __str__(self) -> str:
        where = " and ".join(self.conditions) or "everywhere"
        return f"where {where}: they disagree on {self.disagree:.0%} of {self.inputs} inputs"


@dataclass(frozen=True)
class Changes:
    """Where model B's answers differ from model A's, over ``inputs`` probe inputs (the natural ones first)."""

    inputs: int
    natural: int  # of which held-out data (the rest are blends)
    disagree_natural: int
    disagree_blends: int
    transitions: list[tuple[int, int, int]]  # (A's class, B's class, inputs), most frequent first
    by_class: dict[int, float]  # A's class -> share of its inputs B answers differently
    signal: bool  # the inputs are signals (C, L), not tabular rows or images
    rules: list[Rule]  # the tree's leaves where they mostly disagree, most inputs first
    tree: str  # the whole tree as text
    # per input position (pixel, step or feature): mean input where they disagree minus where they agree
    contrast: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    @property
    def rate(self) -> float:
        return (self.disagree_natural + self.disagree_blends) / max(1, self.inputs)

    def report(self) -> str:
        """A short text report: how much changed, between which classes, and where."""
        blends = self.inputs - self.natural
        lines = [
            f"The models disagree on {self.disagree_natural} of {self.natural} held-out inputs "
            f"({self.disagree_natural / max(1, self.natural):.1%}) and on {self.disagree_blends} of {blends} "
            f"blends of them ({self.disagree_blends / max(1, blends):.1%}).",
        ]
        if not self.transitions:
            return lines[0] + "\nNothing to describe: they answer alike on every probe input."
        lines.append("Most frequent changes (A's answer -> B's answer):")
        total = sum(n for *_, n in self.transitions)
        lines += [
            f"  {a} -> {b}: {n} input{'s' * (n != 1)} ({n / total:.0%} of the changes)"
            for a, b, n in self.transitions[:5]
        ]
        worst = sorted(self.by_class.items(), key=lambda kv: -kv[1])[:3]
        lines.append("A's classes B answers differently most often: " + ", ".join(f"{c} ({r:.0%})" for c, r in worst))
        if self.rules:
            lines.append("Where (a decision tree over interpretable features of the input):")
            lines += [f"  {r}" for r in self.rules]
        else:
            lines.append("No region of the features concentrates the changes (they are spread thin).")
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """The changes between classes (A's answer x B's answer) beside where in the input they happen."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .io import save_figure

        classes = 1 + max([max(a, b) for a, b, _ in self.transitions] + list(self.by_class), default=1)
        counts = np.zeros((classes, classes))
        for a, b, n in self.transitions:
            counts[a, b] = n
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8), layout="constrained")
        im = left.imshow(counts, cmap="Reds")
        left.set_xlabel("B's answer"), left.set_ylabel("A's answer"), left.set_title("where the answers change")
        left.set_xticks(range(classes)), left.set_yticks(range(classes))
        fig.colorbar(im, ax=left, shrink=0.8)
        c = self.contrast
        if c.ndim == 2:
            bound = float(np.abs(c).max()) or 1.0
            fig.colorbar(right.imshow(c, cmap="coolwarm", vmin=-bound, vmax=bound), ax=right, shrink=0.8)
            right.set_xticks([]), right.set_yticks([])
        elif c.ndim == 1 and c.size:
            right.bar(range(len(c)), c, color=np.where(c > 0, "tab:red", "tab:blue"))
            right.set_xlabel("position" if self.signal else "feature")
        right.set_title("mean input where they disagree\nminus where they agree")
        return save_figure(fig, path)


def features(x: torch.Tensor, grid: int = 4) -> tuple[np.ndarray, list[str]]:
    """Interpretable features of inputs ``x``: the mean of each cell of a ``grid`` x ``grid`` partition of an
    image (rows and columns named), of each of ``grid``^2 windows of a signal, or the features of tabular rows.
    Returns the feature matrix and their names."""
    if x.ndim == 2:
        return x.double().numpy(), [f"feature {i}" for i in range(x.shape[1])]
    if x.ndim == 3:  # (n, channels, length)
        length = x.shape[2]
        w = min(grid * grid, length)
        edges = np.linspace(0, length, w + 1).round().astype(int)
        cols = [x[:, :, a:b].mean((1, 2)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        names = [f"mean of positions {a}-{b - 1}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
        return torch.stack(cols, 1).double().numpy(), names
    if x.ndim == 4:  # (n, channels, height, width)
        h, w = x.shape[2:]
        gh, gw = min(grid, h), min(grid, w)
        re, ce = np.linspace(0, h, gh + 1).round().astype(int), np.linspace(0, w, gw + 1).round().astype(int)
        cols, names = [], []
        for r0, r1 in zip(re[:-1], re[1:], strict=True):
            for c0, c1 in zip(ce[:-1], ce[1:], strict=True):
                cols.append(x[:, :, r0:r1, c0:c1].mean((1, 2, 3)))
                names.append(f"mean of rows {r0}-{r1 - 1}, cols {c0}-{c1 - 1}")
        return torch.stack(cols, 1).double().numpy(), names
    raise ConfigError(f"cannot describe inputs of shape {tuple(x.shape[1:])}: expected (F,), (C, L) or (C, H, W)")


def probes(x: torch.Tensor, blends: int, seed: int = 0) -> torch.Tensor:
    """``x`` followed by ``blends`` mixup and CutMix blends of random pairs of its rows."""
    from .fingerprint.queries import cutmix, mixup

    if blends == 0:
        return x
    gen = torch.Generator().manual_seed(seed)
    a, b = (torch.randint(0, len(x), (blends,), generator=gen) for _ in range(2))
    half = blends // 2
    mixed = mixup(x[a[:half]], x[b[:half]], gen)
    if x.ndim == 2:  # tabular rows have no boxes to paste: both halves are mixup
        rest = mixup(x[a[half:]], x[b[half:]], gen)
    else:
        rest = cutmix(x[a[half:]], x[b[half:]], 0.5, gen)
    return torch.cat([x, mixed, rest])


def what_changed(
    model_a: Model | torch.nn.Module,
    model_b: Model | torch.nn.Module,
    data="digits",
    *,
    blends: int = 4000,
    depth: int = 3,
    grid: int = 4,
    seed: int = 0,
) -> Changes:
    """Compare ``model_a`` and ``model_b`` (modules or any ``Model``: hard labels are enough) on ``data`` (a
    registered dataset's test split, or ``(x, y)``) and ``blends`` blends of it, and describe where they differ
    with a decision tree of depth ``depth`` over interpretable features."""
    from sklearn.tree import DecisionTreeClassifier, export_text

    from .fingerprint.helpers import held_out

    x, _, _ = held_out(data)
    a, b = as_model(model_a), as_model(model_b)
    if a.num_classes != b.num_classes:
        raise ConfigError(f"model A answers {a.num_classes} classes and model B {b.num_classes}: nothing to compare")
    xs = probes(x, blends, seed)
    la, lb = a.labels(xs).numpy(), b.labels(xs).numpy()
    differ = la != lb
    natural = len(x)
    pairs, counts = np.unique(np.stack([la[differ], lb[differ]], 1), axis=0, return_counts=True)
    transitions = sorted(((int(p[0]), int(p[1]), int(n)) for p, n in zip(pairs, counts, strict=True)),
                         key=lambda t: -t[2])  # fmt: skip
    by_class = {int(c): float(differ[la == c].mean()) for c in np.unique(la)}
    feats, names = features(xs, grid)
    flat = xs.double().mean(1) if xs.ndim > 2 else xs.double()  # over channels
    contrast = (flat[torch.from_numpy(differ)].mean(0) - flat[torch.from_numpy(~differ)].mean(0)).numpy()
    onehot = np.eye(a.num_classes)[la]
    table = np.concatenate([feats, onehot], 1)
    columns = names + [f"A answers {c}" for c in range(a.num_classes)]
    leaf = max(10, len(xs) // 200)
    tree = DecisionTreeClassifier(max_depth=depth, min_samples_leaf=leaf, class_weight="balanced", random_state=seed)
    rules: list[Rule] = []
    text = ""
    if differ.any() and not differ.all():
        tree.fit(table, differ)
        rules = _rules(tree, columns, table, differ)
        text = export_text(tree, feature_names=columns, show_weights=False)
    else:
        contrast = np.zeros(flat.shape[1:])
    return Changes(
        len(xs),
        natural,
        int(differ[:natural].sum()),
        int(differ[natural:].sum()),
        transitions,
        by_class,
        xs.ndim == 3,
        rules,
        text,
        contrast,
    )


def _rules(tree, columns: list[str], table: np.ndarray, differ: np.ndarray, least: float = 0.5) -> list[Rule]:
    """The regions where the models disagree on at least ``least`` of the inputs, as readable conditions: the
    tree's leaves, with two sibling regions that both qualify merged into their parent's."""
    t = tree.tree_
    leaf_of = tree.apply(table)

    def walk(node: int, conditions: tuple[str, ...]) -> tuple[list[Rule], np.ndarray | None]:
        """The rules under ``node``, and the mask of its inputs when the whole of it qualifies as one region."""
        if t.children_left[node] == t.children_right[node]:  # a leaf
            here = leaf_of == node
            if here.any() and differ[here].mean() >= least:
                return [Rule(conditions, int(here.sum()), float(differ[here].mean()))], here
            return [], None
        name, cut = columns[t.feature[node]], t.threshold[node]
        if name.startswith("A answers"):  # a one-hot column: say it in words
            no, yes = name.replace("A answers", "A does not answer"), name
        else:
            no, yes = f"{name} <= {cut:.3g}", f"{name} > {cut:.3g}"
        left, lmask = walk(t.children_left[node], (*conditions, no))
        right, rmask = walk(t.children_right[node], (*conditions, yes))
        if lmask is not None and rmask is not None:
            here = lmask | rmask
            return [Rule(conditions, int(here.sum()), float(differ[here].mean()))], here
        return left + right, None

    rules, _ = walk(0, ())
    return sorted(rules, key=lambda r: -r.inputs)
