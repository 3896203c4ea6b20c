"""Does an integrity seal tell the released model from a tampered one? For each kind of small edit (one weight
moved by 1% of its layer's largest, 1% weight noise, one fine-tuning step, one pruned unit, a retrained last layer,
and backdoors installed by fine-tuning: BadNets and the hidden backdoor) and each budget, the share of edited copies
flagged "modified" by SSF's sensitive samples, by AKH's misclassified inputs and by random held-out inputs,
compared as the seal compares (log-probabilities within its tolerance) and on labels only. An edit that moves no
log-probability of the whole test split by more than the tolerance cannot be told from the released model on the
data at all: such edits are counted ("invisible") and the rates are also given over the visible ones. Then exact
copies, re-exported every way modelprint reads (a saved folder, TorchScript, ONNX, the module itself), each asked
25 times in a random order, batching and thread count: the largest log-probability difference and the false alarms.

    python benchmarks/integrity.py            # 50 edits of each kind (20 backdoors), budgets 1, 5, 10
    python benchmarks/integrity.py --quick    # 20 edits of each kind (8 backdoors)
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


def log_probs(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return WhiteBox(m).probs(x).double().clamp_min(integrity.FLOOR).log()


def edited_models(owner: torch.nn.Module, trials: int, backdoors: int):
    """Every edited copy, by kind of edit: the small edits applied to copies of the owner, and backdoors installed
    by fine-tuning (the lineage zoo's operations, one target class and seed each)."""
    out = {}
    for edit, apply in EDITS.items():
        gen, models = torch.Generator().manual_seed(7), []
        for _ in range(trials):
            m = copy.deepcopy(owner)
            with torch.no_grad():
                apply(m, gen)
            models.append(m.eval())
        out[edit] = models
    for op in ("badnets", "hidden"):
        out[f"{op} backdoor"] = [build(f"{OWNER}->{op}({i % 10},{i})").eval() for i in range(backdoors)]
    return out


def exact_copies(owner: torch.nn.Module, x: torch.Tensor, folder: Path) -> dict[str, object]:
    """The owner shipped every way modelprint reads an exact copy."""
    save_model(owner, folder / "copy")
    torch.jit.trace(owner, x[:2]).save(str(folder / "ts.pt"))
    torch.onnx.export(owner, (x[:2],), folder / "m.onnx", dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "n"}})
    return {
        "module itself": WhiteBox(owner),
        "saved folder": WhiteBox(load_model(folder / "copy")),
        "TorchScript": WhiteBox(load_model(folder / "ts.pt")),
        "ONNX (onnxruntime)": load_model(folder / "m.onnx"),
    }


def asked_anew(model, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``model``'s log-probabilities on ``x`` asked in a random order and batching, on 1 or 2 threads."""
    order = torch.randperm(len(x), generator=gen)
    size = int(torch.randint(1, len(x) + 1, (1,), generator=gen))
    threads = torch.get_num_threads()
    torch.set_num_threads(int(torch.randint(1, 3, (1,), generator=gen)))
    try:
        parts = [model.probs(x[order[i : i + size]]) for i in range(0, len(x), size)]
    finally:
        torch.set_num_threads(threads)
    p = torch.empty(len(x), parts[0].shape[1], dtype=torch.float64)
    p[order] = torch.cat(parts).double()
    return p.clamp_min(integrity.FLOOR).log()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    trials, backdoors = (20, 8) if args.quick else (50, 20)
    tol = integrity.TOLERANCE
    t0 = time.perf_counter()
    owner = build(OWNER).eval()
    edits = edited_models(owner, trials, backdoors)
    test = data.load("digits", "test").x.float()
    base_test = log_probs(owner, test)
    visible = {k: [bool((log_probs(m, test) - base_test).abs().max() > tol) for m in ms] for k, ms in edits.items()}
    rows = []
    for budget in BUDGETS:
        for name, x in query_sets(owner, budget).items():
            base = log_probs(owner, x)
            for edit, models in edits.items():
                flagged_p, flagged_l = [], []
                for m in models:
                    lp = log_probs(m, x)
                    same_labels = bool((lp.argmax(1) == base.argmax(1)).all())
                    flagged_l.append(not same_labels)
                    flagged_p.append(not (same_labels and (lp - base).abs().max() <= tol))
                seen = [f for f, v in zip(flagged_p, visible[edit], strict=True) if v]
                rows.append({
                    "budget": budget, "queries": name, "edit": f"{edit} ({len(seen)}/{len(models)} visible)",
                    "log-probs": sum(flagged_p) / len(models), "log-probs, visible": sum(seen) / max(len(seen), 1),
                    "labels": sum(flagged_l) / len(models),
                })  # fmt: skip
    table = pd.DataFrame(rows).pivot_table(index=["edit", "budget"], columns="queries",
                                           values=["log-probs", "log-probs, visible", "labels"])  # fmt: skip
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(f"tamper detection (owner {OWNER}, tolerance {tol:g} on log-probabilities); an edit is visible when it")
        print(f"moves some log-probability of the {len(test)} test inputs by more than the tolerance")
        print(table.round(2).to_string())
    x = integrity.seal(owner, "digits", max(BUDGETS)).inputs
    base, gen = log_probs(owner, x), torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        copies = exact_copies(owner, x, Path(tmp))
        print(f"\nexact copies on SSF's {len(x)} samples, each asked 25 times (random order, batching, 1-2 threads):")
        alarms = 0
        for name, model in copies.items():
            gaps = [float((asked_anew(model, x, gen) - base).abs().max()) for _ in range(25)]
            flagged = sum(g > tol for g in gaps)
            alarms += flagged
            print(f"  {name:22s} largest log-probability difference {max(gaps):.2e}, false alarms {flagged}/25")
        half = float((log_probs(copy.deepcopy(owner).half(), x.half()) - base).abs().max())
        print(f"  false alarms in all: {alarms}/{25 * len(copies)}; a half-precision copy (a modification) differs by "
              f"{half:.2e}: {'modified' if half > tol else 'missed'}")  # fmt: skip
    print(f"[{time.perf_counter() - t0:.0f}s]")


if __name__ == "__main__":
    main()
