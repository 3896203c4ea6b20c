"""``modelprint zoo`` and ``modelprint data``: build, inspect and list models and datasets."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from ..errors import ConfigError
from .common import (
    PROGRESS_COLUMNS,
    CacheOpt,
    DeviceOpt,
    check_device,
    console,
    err_console,
    registry_table,
    write_csv,
)

zoo_app = typer.Typer(help="Build and inspect models of the attack zoo from lineage expressions.", no_args_is_help=True)


@zoo_app.command("encoder")
def encoder_cmd(
    source: Annotated[str, typer.Argument(help="The encoder: minilm, or an encoder folder.")],
    steps: Annotated[str, typer.Argument(help="e.g. 'finetune(0)->permute(1)->rotate(2)', or 'independent(0)'.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The folder to write the derived encoder to.")],
    device: DeviceOpt = "cpu",
) -> None:
    """Derive a text encoder from SOURCE: finetune(seed), lora(seed, rank=8), permute(seed), rotate(seed),
    prune_heads(amount), prune_units(amount), quantize(int8), distill(seed, layers=3), or an independent one of its
    shape and vocabulary (independent(seed)), chained with ->."""
    from ..transformer import load_encoder, save_encoder
    from ..transformer.derive import derive, parse

    parse(steps)
    t0 = time.perf_counter()
    with err_console.status(f"deriving {steps} from {source}"):
        derived = derive(load_encoder(source, device=check_device(device)), steps)
        save_encoder(derived, out)
    console.print(f"wrote {out}: {derived.name} [{time.perf_counter() - t0:.1f}s]")


data_app = typer.Typer(help="List and inspect datasets.", no_args_is_help=True)


def build_table(
    exprs: list[str], cache: Path | None, device: str, title: str, reference: str | None = None
) -> list[dict]:
    """Build every expression with a progress bar; return one row per model for the zoo table."""
    from .. import data
    from ..lineage import build_node
    from ..lineage.train import predict

    rows = []
    with Progress(*PROGRESS_COLUMNS, console=err_console, transient=True) as progress:
        task = progress.add_task("building", total=len(exprs))
        ref_labels = None
        for expr in exprs:
            progress.update(task, description=f"building {expr}")
            t0 = time.perf_counter()
            built = build_node(expr, cache_dir=cache, device=device)
            row = {
                "lineage": built.expression,
                "dataset": built.dataset,
                "test_accuracy": built.test_accuracy,
                "seconds": time.perf_counter() - t0,
                "cached": built.cached,
            }
            if reference is not None:
                labels = predict(built.module, data.load(built.dataset, "test").x, device=device).argmax(1)
                if ref_labels is None:
                    ref_labels = labels
                same_task = built.dataset == reference
                row["agreement"] = float((labels == ref_labels).float().mean()) if same_task else None
            rows.append(row)
            progress.advance(task)
    table = Table(title=title)
    for col in ("lineage", "dataset", "test acc", *(["agrees w/ source"] if reference else []), "time", "cached"):
        # expressions have no spaces to wrap at: fold them rather than cropping what tells models apart
        table.add_column(
            col,
            justify="left" if col in ("lineage", "dataset") else "right",
            overflow="fold" if col == "lineage" else "ellipsis",
        )
    for r in rows:
        agree = [] if reference is None else ["—" if r["agreement"] is None else f"{r['agreement']:.3f}"]
        table.add_row(
            r["lineage"],
            r["dataset"],
            f"{r['test_accuracy']:.3f}",
            *agree,
            f"{r['seconds']:.1f}s",
            "yes" if r["cached"] else "",
        )
    console.print(table)
    return rows


@zoo_app.command("build")
def zoo_build(
    exprs: Annotated[list[str], typer.Argument(help="Lineage expressions, e.g. 'train(cnn,digits,0)->prune(0.5)'.")],
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write the table as CSV here.")] = None,
) -> None:
    """Build models from lineage expressions (cached: a second build is a load) and show their accuracy."""
    from ..lineage import parse

    for e in exprs:  # fail on a typo before spending minutes on the first models
        parse(e)
    rows = build_table(exprs, cache, check_device(device), "zoo")
    if out is not None:
        write_csv(rows, out)


@zoo_app.command("show")
def zoo_show(
    target: Annotated[
        str, typer.Argument(help="A model folder or file (ONNX, TorchScript, weights), or an expression in the cache.")
    ],
    cache: CacheOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the config as JSON.")] = False,
) -> None:
    """Show a model: architecture, lineage, accuracy, checksum, parameters and sparsity (of a modelprint folder;
    of any other file, what it records)."""
    from ..access import Model
    from ..digest import sha256_file
    from ..io import load_model, read_config
    from ..lineage import ZooCache, cache_keys, parse
    from ..lineage.cache import default_cache_dir

    path = Path(target)
    if not path.exists():
        if "(" not in target:
            raise ConfigError(f"{target}: no such model file or folder")
        path = ZooCache(cache or default_cache_dir()).path(cache_keys(parse(target))[-1])
        if not path.exists():
            raise ConfigError(f"{target}: not in the cache (build it with: modelprint zoo build '{target}')")
    module = load_model(path)
    if path.is_dir():
        config = read_config(path)
        meta = config.get("meta", {})
        info = {
            **config,
            "architecture": ", ".join(f"{a}={b}" for a, b in config["arch"].items()),
            "lineage": meta.get("expression"), "dataset": meta.get("dataset"),
            "test accuracy": meta.get("test_accuracy"), "format": f"{config['format']} v{config['format_version']}",
        }  # fmt: skip
    else:
        info = {"sha256": sha256_file(path)}
        if isinstance(module, Model):  # ONNX: run by onnxruntime, its weights stay opaque
            info |= {"format": "ONNX (onnxruntime, black-box)", "input shape": module._input_shape,
                     "classes": module._num_classes}  # fmt: skip
        else:
            import torch

            scripted = isinstance(module, torch.jit.ScriptModule)
            name = getattr(module, "original_name", None) if scripted else type(module).__name__
            info |= {"format": "TorchScript" if scripted else "weights", "architecture": name}
    if not isinstance(module, Model):
        params = list(module.parameters())
        weights = sum(p.numel() for p in params if p.ndim > 1)
        zeros = sum(int((p == 0).sum()) for p in params if p.ndim > 1)
        dtype = str(params[0].dtype).removeprefix("torch.") if params else None
        info |= {"parameters": sum(p.numel() for p in params), "weight sparsity": zeros / max(weights, 1)}
        info.setdefault("dtype", dtype)
    info["path"] = str(path)
    if as_json:
        console.print_json(json.dumps(info, default=str))
        return
    table = Table(title=str(path), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    shown = ("architecture", "lineage", "dataset", "test accuracy", "input shape", "classes", "dtype", "parameters",
             "weight sparsity", "sha256", "created", "format")  # fmt: skip
    for k in shown:
        v = info.get(k)
        if v is None and k not in ("lineage", "dataset", "test accuracy"):
            continue
        text = "—" if v is None else f"{v:,}" if k == "parameters" else f"{v:.4f}" if isinstance(v, float) else v
        table.add_row(k, str(text))
    console.print(table)


@zoo_app.command("ops")
def zoo_ops() -> None:
    """List the lineage operations and their parameters."""
    from ..lineage import OPS

    console.print(registry_table("lineage operations", OPS, "operation"))


@data_app.command("list")
def data_list() -> None:
    """List the datasets with their split sizes, input shape and classes."""
    from .. import data

    table = Table(title="datasets")
    for col in ("name", "input shape", "classes", "train", "attacker", "test"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for name in data.names():
        if name.endswith(":"):
            table.add_row(f"{name}PATH", "—", "—", "—", "—", "—")
            continue
        splits = [data.load(name, s) for s in data.SPLITS]
        table.add_row(name, str(splits[0].input_shape), str(splits[0].num_classes), *(str(len(s)) for s in splits))
    console.print(table)


# FPR 0.1: the null bank then needs 22 models per architecture (66 in all), which keeps the demo within 10 minutes
