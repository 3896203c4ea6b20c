"""QuRD's raw scores read with QuRD's labelling rules, on a small tree in QuRD's layout."""

from __future__ import annotations

import pytest

from modelprint.bench import qurd
from modelprint.errors import FileFormatError

HEADER = "value,walltime,source_model,target_model,dataset,distance,representation,sampler,split,budget\n"
S, P = "train(a,F)", "pretrain(a,im)->transfer(F,0.1)"
REUSE = {  # target -> distance from its source
    S: [(S, 0.0), (f"{S}->prune(0.5)", 0.1), (f"{S}->steal(b)", 0.55), ("train(b,F)", 0.5),
        ("train(b,F)->prune(0.5)", 0.6), (P, 0.7)],
    P: [(P, 0.0), (f"{P}->quantize(qint8)", 0.2), ("pretrain(a,im)->transfer(F,0.5)", 0.05), ("train(b,F)", 0.9)],
}  # fmt: skip
SAC = [("vgg_model->transfer(CIFAR10C,0)", 0.2), ("vgg_model->fineprune(0)", 0.5), ("resnet18(5)", 0.4),
       ("resnet18_cifar10C(5)", 0.3)]  # fmt: skip


def write(root, benchmark, dataset, rows):
    folder = root / "7" / benchmark / dataset / "Negative-test-100"
    folder.mkdir(parents=True)
    lines = [f'{v},0.0,"{s}","{t}",{dataset},hamming,Labels,Negative,test,100\n' for s, t, v in rows]
    (folder / "Labels-hamming.csv").write_text(HEADER + "".join(lines))
    return folder / "Labels-hamming.csv"


@pytest.fixture
def tree(tmp_path):
    write(tmp_path, "ModelReuse", "F", [(s, t, v) for s, targets in REUSE.items() for t, v in targets])
    write(tmp_path, "SACBenchmark", "CIFAR10", [("vgg_model", t, v) for t, v in SAC])
    return tmp_path


def test_pairs_are_labelled_by_qurds_rules(tree):
    df = qurd.read(tree)
    assert set(df["scheme"]) == {"AKH|F", "AKH|CIFAR10"} and (df["score"] <= 1).all()
    related = df[df["related"]].set_index("target")["task"].to_dict()
    assert related[f"{S}->steal(b)"] == "label_extraction" and related[f"{P}->quantize(qint8)"] == "quantize"
    assert related["vgg_model->fineprune(0)"] == "prune" and related["vgg_model->transfer(CIFAR10C,0)"] == "transfer"
    negatives = df[~df["related"]].groupby(["source", "target"])["task"].apply(set)
    assert negatives[(S, "train(b,F)")] == set(qurd.MODEL_REUSE_TASKS) and (S, P) in negatives
    assert (P, "pretrain(a,im)->transfer(F,0.5)") not in negatives  # a sibling on the same pretrained model
    assert negatives[("vgg_model", "resnet18_cifar10C(5)")] == {"transfer"}
    assert "transfer" not in negatives[("vgg_model", "resnet18(5)")]


def test_table_reproduces_hand_computed_cells(tree):
    t = qurd.table(qurd.read(tree)).set_index(["fingerprint", "task"])
    # prune: on F, 0.9 above every negative of S (0.5, 0.4, 0.3); on CIFAR10, 0.5 below 0.6; datasets weigh equally
    assert t.loc[("AKH", "prune"), "auc"] == 0.5 and t.loc[("AKH", "prune"), "tpr"] == 0.5
    # label extraction (0.45) above two of S's three negatives (0.5, 0.4, 0.3), so not detected at zero
    assert t.loc[("AKH", "label_extraction"), "auc"] == pytest.approx(2 / 3)
    assert t.loc[("AKH", "label_extraction"), "tpr"] == 0
    assert t.loc[("AKH", "transfer"), "at_zero"] and t.loc[("AKH", "transfer"), "tpr"] == 1


def test_unreadable_trees_and_files_fail_with_one_line(tmp_path):
    with pytest.raises(FileFormatError, match="no QuRD scores"):
        qurd.read(tmp_path)
    path = write(tmp_path, "ModelReuse", "F", [(S, S, 0.0)])
    path.write_text("value,source_model\n0.1,x\n")
    with pytest.raises(FileFormatError, match="lacks QuRD's column"):
        qurd.read(tmp_path)
    path.write_text(HEADER + f'oops,0.0,"{S}","{S}",F,hamming,Labels,Negative,test,100\n')
    with pytest.raises(FileFormatError, match="non-numeric"):
        qurd.read(tmp_path)
