"""``modelprint watermark``: plant a watermark before release; check a suspect for it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from .common import (
    PROGRESS_COLUMNS,
    CacheOpt,
    DeviceOpt,
    ModelArg,
    accuracy_on_test,
    check_device,
    console,
    err_console,
    show_verdict,
)

watermark_app = typer.Typer(help="Plant a watermark before release; check a suspect for it.", no_args_is_help=True)


@watermark_app.command("embed")
def watermark_embed(
    model: ModelArg,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Where to write the marked model (a folder, or a file for yours).")
    ],
    key_path: Annotated[Path, typer.Option("--key", help="Where to write the secret key.")],
    scheme: Annotated[
        str,
        typer.Option("--scheme", "-s", help="trigger-set, noise, content, unrelated, frontier-stitching or uchida."),
    ] = "trigger-set",
    data: Annotated[str, typer.Option("--data", "-d", help="The owner's training data (its train split).")] = (
        "digits"
    ),
    key_seed: Annotated[int, typer.Option("--key-seed", help="Seed of the key.")] = 0,
    epochs: Annotated[int, typer.Option("--epochs", help="Fine-tuning epochs with the key mixed in.")] = 20,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Fine-tune MODEL with a secret key mixed into its training data; write the marked model and the key."""
    from .. import watermark
    from ..access import WhiteBox
    from ..io import save_any
    from ..lineage import resolve

    watermark.make_watermark(scheme)  # fail on a typo before loading anything
    device = check_device(device)
    with err_console.status(f"embedding {scheme}"):
        marked, key = watermark.embed(
            resolve(model, cache_dir=cache, device=device), scheme, data, key_seed, epochs=epochs, device=device
        )
        out = save_any(marked, out, meta={"watermark": key.scheme.spec(), "key_sha256": key.owner_sha256})
        key.save(key_path)
        learnt = key.match_rate(WhiteBox(marked, num_classes=key.num_classes, device=device))
    console.print(
        f"wrote {out} and {key_path} ({key.scheme.spec()}, {len(key.labels)} key inputs; "
        f"the marked model matches {learnt:.0%} of the key)"
    )
    if learnt < watermark.LEARNT:  # a key half learnt leaves a weak or unverifiable watermark
        err_console.print("[bold yellow]warning:[/] the key is not learnt; embed again with more --epochs")


@watermark_app.command("calibrate")
def watermark_calibrate(
    key_path: Annotated[Path, typer.Argument(help="The key file.")],
    null: Annotated[
        list[str], typer.Option("--null", "-n", help="A clean model (repeat), or 'auto' to build the null bank.")
    ],
    fpr: Annotated[float, typer.Option("--fpr", help="Target false-positive rate.")] = 0.01,
    cache: CacheOpt = None,
) -> None:
    """Record clean models' match rates (needed by every key but trigger-set and uchida)."""
    from .. import watermark

    nulls = "auto" if null == ["auto"] else null
    with err_console.status("scoring clean models"):
        key = watermark.calibrate(
            watermark.Key.load(key_path), nulls, fpr, cache_dir=cache,
            progress=lambda m: err_console.print(m, highlight=False),
        )  # fmt: skip
    key.save(key_path)
    tau = key.null.threshold(fpr)
    reach = f"a match rate above {tau:.4f}" if tau < 1 else "none: no match rate can reach it with these clean models"
    console.print(f"calibrated {key_path} on {len(key.null_scores)} clean models; marked at FPR {fpr:g}: {reach}")


@watermark_app.command("verify")
def watermark_verify(
    key_path: Annotated[Path, typer.Argument(help="The key file.")],
    suspect: Annotated[str, typer.Argument(help="The suspect: a model file or folder, or a lineage expression.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Does SUSPECT carry the watermark? Exit code 0: yes, 1: no, 3: inconclusive, 2: error."""
    from .. import watermark

    v = watermark.verify(watermark.Key.load(key_path), suspect, cache_dir=cache, device=check_device(device))
    show_verdict(v, f"{suspect} vs {key_path}", as_json)


@watermark_app.command("bench")
def watermark_bench(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: results.csv, embedding.csv, report.html.")],
    source: Annotated[str, typer.Option("--source", help="The model to mark (a lineage expression).")] = (
        "train(cnn,digits,0)"
    ),
    schemes: Annotated[str, typer.Option("--schemes", help="Comma-separated watermark schemes.")] = "all",
    attacks: Annotated[str, typer.Option("--attacks", help="Comma-separated attacks (see --help).")] = "all",
    epochs: Annotated[int, typer.Option("--epochs", help="Embedding epochs.")] = 20,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Embed every scheme in SOURCE, apply every attack, verify, and write the HTML report. An attack succeeds
    (WRT rule) when the mark is no longer detected and accuracy fell at most 5 points. Attacks: finetune,
    transfer, prune-0.3/0.6/0.9, fineprune, quantize, distill, label-extract, permute, rescale. Resumes."""
    from ..lineage.expr import split_top
    from ..watermark import bench

    def names(text: str, every) -> list[str]:
        return list(every) if text == "all" else [x.strip() for x in split_top(text, ",") if x.strip()]

    with Progress(*PROGRESS_COLUMNS, console=err_console, transient=True) as bar:
        task = bar.add_task("watermark bench", total=None)

        def progress(what: str, i: int, n: int) -> None:
            bar.update(task, completed=i, total=n, description=what)

        results, cost = bench.run(
            out,
            source,
            names(schemes, bench.SCHEMES),
            names(attacks, bench.ATTACKS),
            epochs=epochs,
            cache_dir=cache,
            device=check_device(device),
            progress=progress,
        )
    table = Table(title=f"watermark robustness of {source}")
    attack_names = list(dict.fromkeys(results.loc[results["kind"] == "attack", "attack"]))
    table.add_column("scheme", no_wrap=True)
    for a in attack_names:
        table.add_column(a, justify="right")
    for scheme, g in results[results["kind"] == "attack"].groupby("scheme", sort=False):
        cells = {r["attack"]: ("[green]kept" if r["detected"] else "[red]REMOVED" if r["succeeded"] else "broken")
                 + f" {r['evidence']:.2f}" for r in g.to_dict("records")}  # fmt: skip
        table.add_row(scheme, *(cells.get(a, "—") for a in attack_names))
    table.caption = "key match rate; REMOVED: undetected with accuracy drop <= 5 points; broken: undetected, drop > 5"
    console.print(table)
    console.print(f"wrote {bench.report(out)}")


@watermark_app.command("distribute")
def watermark_distribute(
    model: ModelArg,
    recipients: Annotated[list[str], typer.Option("--recipient", "-r", help="A recipient's name (repeat).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the copies, one per recipient.")],
    key_path: Annotated[Path, typer.Option("--key", help="Where to write the key that traces them (keep it secret).")],
    data: Annotated[str, typer.Option("--data", "-d", help="The owner's data (its train split).")] = "digits",
    bits: Annotated[int, typer.Option("--bits", help="Code length (more resists larger collusions).")] = 128,
    epochs: Annotated[int, typer.Option("--epochs", help="Fine-tuning epochs per round and copy.")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the projection and the codes.")] = 0,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """One marked copy of MODEL per --recipient, each with its own code in the weights (DeepMarks-style), written
    to --out/NAME, and the key that traces a leaked copy, or an average of several, back to them."""
    from ..io import save_any
    from ..lineage import resolve
    from ..watermark.recipients import distribute

    device = check_device(device)
    owner = resolve(model, cache_dir=cache, device=device)
    with err_console.status(f"marking {len(recipients)} copies"):
        copies, key = distribute(owner, recipients, data, bits=bits, epochs=epochs, seed=seed, device=device)
    key.save(key_path)
    table = Table(title=f"copies of {model} (test accuracy {accuracy_on_test(owner, data, device):.3f})")
    for name in ("recipient", "copy", "test accuracy"):
        table.add_column(name)
    for name, copy in zip(recipients, copies, strict=True):
        table.add_row(name, str(save_any(copy, out / name)), f"{accuracy_on_test(copy, data, device):.3f}")
    console.print(table)
    console.print(f"wrote {key_path}")


@watermark_app.command("trace")
def watermark_trace(
    key_path: Annotated[Path, typer.Argument(help="The key (watermark distribute --key).")],
    leaked: ModelArg,
    alpha: Annotated[float, typer.Option("--alpha", help="Chance of accusing an innocent recipient.")] = 0.01,
    as_json: Annotated[bool, typer.Option("--json", help="Print the ranking as JSON.")] = False,
    cache: CacheOpt = None,
) -> None:
    """Who leaked LEAKED? Every recipient ranked by how strongly their code is in it, with p-values; those
    accused at --alpha (Holm over the recipients). Exit code 0: someone accused, 1: nobody, 2: error."""
    import json

    from ..lineage import resolve
    from ..watermark.recipients import RecipientKey, trace

    rows = trace(RecipientKey.load(key_path), resolve(leaked, cache_dir=cache), alpha=alpha)
    if as_json:
        console.print_json(json.dumps(rows))
    else:
        table = Table(title=f"who leaked {leaked}? (accused at {alpha:g}, Holm)")
        for name in ("recipient", "score", "p-value", "accused"):
            table.add_column(name)
        for r in rows:
            table.add_row(r["recipient"], f"{r['score']:.3f}", f"{r['p_value']:.2g}", "yes" if r["accused"] else "")
        console.print(table)
    raise typer.Exit(0 if any(r["accused"] for r in rows) else 1)
