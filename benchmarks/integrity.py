"""Does an integrity seal tell the released model from a tampered one? For each kind of small edit (one weight
moved by 1% of its layer's largest, 1% weight noise, one fine-tuning step, one pruned unit, a retrained last layer)
and each budget, the share of edited copies flagged "modified" by SSF's sensitive samples, by AKH's misclassified
inputs and by random held-out inputs, compared on probabilities (within the seal's tolerance) and on labels only;
and, on exact copies re-exported every way modelprint reads (a saved folder, TorchScript, ONNX, another thread
count), the largest probability difference and the false alarms.

    python benchmarks/integrity.py            # 50 edits of each kind, budgets 1, 5, 10
    python benchmarks/integrity.py --quick    # 20 edits of each kind
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

import modelprint as mp
from modelprint import data, integrity
from modelprint.access import WhiteBox
from modelprint.io import load_model, save_model
from modelprint.lineage import build
from modelprint.nets import head, weight_layers

OWNER, BUDGETS = "train(cnn,digits,0)", (1, 5, 10)


def one_weight(m: torch.nn.Module, gen: torch.Generator) -> None:
    layers = weight_layers(m)
    w = layers[int(torch.randint(len(layers), (1,), generator=gen))].weight
    i = int(torch.randint(w.numel(), (1,), generator=gen))
    sign = 1 if torch.rand(1, generator=gen) < 0.5 else -1
    w.view(-1)[i] += sign * 0.01 * w.abs().max()


def noise(m: torch.nn.Module, gen: torch.Generator) -> None:
    for p in m.parameters():
        p += torch.randn(p.shape, generator=gen) * 0.01 * p.std()


def pruned_unit(m: torch.nn.Module, gen: torch.Generator) -> None:
    _, last = head(m)
    layers = [w for w in weight_layers(m) if w is not last]
    w = layers[int(torch.randint(len(layers), (1,), generator=gen))]
    unit = int(torch.randint(w.weight.shape[0], (1,), generator=gen))
    w.weight[unit] = 0
    if w.bias is not None:
        w.bias[unit] = 0


def tuned(m: torch.nn.Module, gen: torch.Generator, only_head: bool) -> None:
    ds = data.load("digits", "attacker")
    idx = torch.randperm(len(ds.x), generator=gen)[:32]
    params = head(m)[1].parameters() if only_head else m.parameters()
    opt = torch.optim.SGD(params, lr=1e-3 if not only_head else 1e-2)
    with torch.enable_grad():
        for _ in range(1 if not only_head else 10):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(ds.x[idx].float()), ds.y[idx]).backward()
            opt.step()


EDITS = {
    "one weight (1%)": one_weight,
    "1% weight noise": noise,
    "one fine-tuning step": lambda m, g: tuned(m, g, only_head=False),
    "one pruned unit": pruned_unit,
    "retrained last layer": lambda m, g: tuned(m, g, only_head=True),
}


def query_sets(owner: torch.nn.Module, budget: int) -> dict[str, torch.Tensor]:
    test = data.load("digits", "test").x.float()
    pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(budget))[:budget]
    return {
        "SSF": integrity.seal(owner, "digits", budget).inputs,
        "AKH inputs": mp.extract(owner, "AKH", "digits", budget).queries,
        "random inputs": test[pick],
    }


def re_exports(owner: torch.nn.Module, x: torch.Tensor, folder: Path) -> dict[str, torch.Tensor]:
    """The owner's probabilities on ``x`` through every way of shipping an exact copy."""
    save_model(owner, folder / "copy")
    torch.jit.trace(owner, x[:2]).save(str(folder / "ts.pt"))
    torch.onnx.export(owner, (x[:2],), folder / "m.onnx", dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "n"}})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    one_thread = WhiteBox(owner).probs(x)
    torch.set_num_threads(threads)
    return {
        "saved folder": WhiteBox(load_model(folder / "copy")).probs(x),
        "TorchScript": WhiteBox(load_model(folder / "ts.pt")).probs(x),
        "ONNX (onnxruntime)": load_model(folder / "m.onnx").probs(x),
        "1 thread": one_thread,
        "half precision (a modification)": WhiteBox(copy.deepcopy(owner).half()).probs(x),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    trials = 20 if args.quick else 50
    t0 = time.perf_counter()
    owner = build(OWNER).eval()
    rows = []
    for budget in BUDGETS:
        for name, x in query_sets(owner, budget).items():
            base = WhiteBox(owner).probs(x).double()
            for edit, apply in EDITS.items():
                gen = torch.Generator().manual_seed(7)
                flagged_p = flagged_l = 0
                for _ in range(trials):
                    m = copy.deepcopy(owner)
                    with torch.no_grad():
                        apply(m, gen)
                    p = WhiteBox(m.eval()).probs(x).double()
                    same_labels = bool((p.argmax(1) == base.argmax(1)).all())
                    flagged_l += not same_labels
                    flagged_p += not (same_labels and (p - base).abs().max() <= integrity.TOLERANCE)
                rates = {"detected (probs)": flagged_p / trials, "detected (labels)": flagged_l / trials}
                rows.append({"budget": budget, "queries": name, "edit": edit, **rates})
    table = pd.DataFrame(rows).pivot_table(index=["edit", "budget"], columns="queries",
                                           values=["detected (probs)", "detected (labels)"])  # fmt: skip
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"tamper detection over {trials} edits of each kind (owner {OWNER}, tolerance {integrity.TOLERANCE:g})")
        print(table.round(2).to_string())
    x = integrity.seal(owner, "digits", max(BUDGETS)).inputs
    base = WhiteBox(owner).probs(x).double()
    with tempfile.TemporaryDirectory() as tmp:
        exports = re_exports(owner, x, Path(tmp))
    print("\nexact copies (and one modification) on SSF's samples: largest probability difference, verdict")
    for name, p in exports.items():
        gap = float((p.double() - base).abs().max())
        flagged = gap > integrity.TOLERANCE
        modification = "half" in name
        verdict = ("modified" if flagged else "missed") if modification else ("false alarm" if flagged else "identical")
        print(f"  {name:34s} {gap:.2e}  {verdict}")
    print(f"[{time.perf_counter() - t0:.0f}s]")


if __name__ == "__main__":
    main()
