"""The ``modelprint`` command: a thin typer layer over the Python API."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .errors import ConfigError, ModelprintError

app = typer.Typer(
    help="Is this suspect model mine, or derived from mine?", no_args_is_help=True, pretty_exceptions_enable=False
)
zoo_app = typer.Typer(help="Build and inspect models of the attack zoo from lineage expressions.", no_args_is_help=True)
data_app = typer.Typer(help="List and inspect datasets.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")
bench_app = typer.Typer(help="Benchmark fingerprint schemes: run, summarise, report.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
diffusion_app = typer.Typer(
    help="Small diffusion models (diffusers UNet) for watermark experiments.", no_args_is_help=True
)
app.add_typer(diffusion_app, name="diffusion")
registry_app = typer.Typer(
    help="A database of known models: which one is a suspect derived from?", no_args_is_help=True
)
app.add_typer(registry_app, name="registry")
watermark_app = typer.Typer(help="Plant a watermark before release; check a suspect for it.", no_args_is_help=True)
app.add_typer(watermark_app, name="watermark")
console = Console(width=None if sys.stdout.isatty() else 160)  # logs keep wide tables readable
err_console = Console(stderr=True)

CacheOpt = Annotated[
    Path | None,
    typer.Option("--cache", help="Zoo cache folder (default: $MODELPRINT_CACHE or ~/.cache/modelprint/zoo)."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")]


PROGRESS_COLUMNS = (
    TextColumn("[progress.description]{task.description}"),
    BarColumn(),
    TextColumn("{task.completed}/{task.total}"),
    TimeElapsedColumn(),
    TimeRemainingColumn(),
)


def check_device(device: str) -> str:
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA device is available (torch {torch.__version__})")
        return device
    raise ConfigError(f"--device must be cpu, cuda or cuda:N, got {device!r}")


def _version(value: bool) -> None:
    if value:
        console.print(f"modelprint {__version__} (torch {torch.__version__})")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """modelprint: fingerprints, watermarks and integrity checks for neural networks."""


def build_table(
    exprs: list[str], cache: Path | None, device: str, title: str, reference: str | None = None
) -> list[dict]:
    """Build every expression with a progress bar; return one row per model for the zoo table."""
    from . import data
    from .lineage import build_node
    from .lineage.train import predict

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
    from .lineage import parse

    for e in exprs:  # fail on a typo before spending minutes on the first models
        parse(e)
    rows = build_table(exprs, cache, check_device(device), "zoo")
    if out is not None:
        write_csv(rows, out)


@zoo_app.command("show")
def zoo_show(
    target: Annotated[str, typer.Argument(help="A saved model folder, or a lineage expression in the cache.")],
    cache: CacheOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the config as JSON.")] = False,
) -> None:
    """Show a saved model: architecture, lineage, accuracy, checksum, parameters and sparsity."""
    from .io import load_model, read_config
    from .lineage import ZooCache, cache_keys, parse
    from .lineage.cache import default_cache_dir

    path = Path(target)
    if not path.exists():
        if "(" not in target:
            raise ConfigError(f"{target}: no such model folder")
        path = ZooCache(cache or default_cache_dir()).path(cache_keys(parse(target))[-1])
        if not path.exists():
            raise ConfigError(f"{target}: not in the cache (build it with: modelprint zoo build '{target}')")
    config = read_config(path)
    module = load_model(path)
    params = [p for p in module.parameters()]
    n = sum(p.numel() for p in params)
    zeros = sum(int((p == 0).sum()) for p in params if p.ndim > 1)
    weights = sum(p.numel() for p in params if p.ndim > 1)
    info = {**config, "path": str(path), "parameters": n, "weight_sparsity": zeros / max(weights, 1)}
    if as_json:
        console.print_json(json.dumps(info))
        return
    table = Table(title=str(path), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    arch = config["arch"]
    meta = config.get("meta", {})
    for k, v in [
        ("architecture", ", ".join(f"{a}={b}" for a, b in arch.items())),
        ("lineage", meta.get("expression", "—")),
        ("dataset", meta.get("dataset", "—")),
        ("test accuracy", f"{meta['test_accuracy']:.4f}" if "test_accuracy" in meta else "—"),
        ("dtype", config["dtype"]),
        ("parameters", f"{n:,}"),
        ("weight sparsity", f"{info['weight_sparsity']:.3f}"),
        ("sha256", config["sha256"]),
        ("created", config.get("created", "—")),
        ("format", f"{config['format']} v{config['format_version']}"),
    ]:
        table.add_row(k, str(v))
    console.print(table)


@zoo_app.command("ops")
def zoo_ops() -> None:
    """List the lineage operations and their parameters."""
    from .lineage import OPS

    table = Table(title="lineage operations")
    for col in ("operation", "parameters", "what it does"):
        table.add_column(col)
    for name in OPS.names():
        op = OPS.get(name)
        defaults = op.param_defaults()
        params = ", ".join(f"{p}={defaults[p]}" if p in defaults else p for p in op.param_names())
        table.add_row(name, params, " ".join((op.__doc__ or "").split()))
    console.print(table)


@data_app.command("list")
def data_list() -> None:
    """List the datasets with their split sizes, input shape and classes."""
    from . import data

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
# on 2 cores; at 0.05 it needs 135, at 0.01 690 (see decide.needed)
DEMO_BENCH, DEMO_BUDGETS, DEMO_FPR = "digits-sac", (20, 100), 0.1
DEMO_SCHEMES = ("AKH", "Divergent")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the report and the model cache.")] = Path(
        "demo-out"
    ),
    device: DeviceOpt = "cpu",
) -> None:
    """The whole story on the bundled digits: build the demo zoo, verify every suspect with calibrated
    fingerprints, benchmark every black-box scheme at budgets 20 and 100, and write OUT/report.html."""
    from .bench import load, report
    from .fingerprint import calibrate, extract, verify
    from .lineage import build

    device = check_device(device)
    bench = load(DEMO_BENCH, "demo")
    source = bench.sources[0]
    suspects = bench.targets(source)
    title = f"demo zoo: {DEMO_BENCH} (demo profile)"
    rows = build_table(bench.models(), out / "zoo", device, title, reference="digits")
    write_csv(rows, out / "zoo.csv")
    cache = out / "zoo"

    owner = build(source, cache_dir=cache, device=device)
    verdicts = []
    for scheme in DEMO_SCHEMES:
        with err_console.status(f"{scheme}: extracting, calibrating on the null bank"):
            fp = extract(owner, scheme, bench.dataset, 100, cache_dir=cache, device=device)
            fp = calibrate(
                fp, "auto", DEMO_FPR, cache_dir=cache, device=device,
                progress=lambda m: err_console.print(m, highlight=False),
            )  # fmt: skip
            fp.save(out / f"{scheme}.fp")
        for t in suspects:
            v = verify(fp, t.model, cache_dir=cache, device=device)
            verdicts.append(
                {
                    "suspect": t.model,
                    "task": t.task or "independent",
                    "derived": t.related,
                    "scheme": scheme,
                    "score": v.score,
                    "threshold": v.threshold,
                    "p_value": v.p_value,
                    "outcome": v.outcome,
                    "related": v.related,
                    "correct": v.related == t.related,
                }
            )
    table = Table(
        title=f"verdicts on suspects of source = {source} (budget 100, null bank at FPR {DEMO_FPR:g}: "
        f"{len(fp.null_scores)} independent models)"
    )
    table.add_column("suspect", overflow="fold")
    table.add_column("task")
    for scheme in DEMO_SCHEMES:
        table.add_column(f"{scheme} score / p", justify="right")
    for t in suspects:
        cells = []
        for r in (r for r in verdicts if r["suspect"] == t.model):
            mark = {"related": "[green]related[/]", "inconclusive": "[yellow]inconclusive[/]"}.get(
                r["outcome"], "unrelated"
            )
            cells.append(f"{r['score']:.2f} / {r['p_value']:.3g} {mark}{'' if r['correct'] else ' [red]✗[/]'}")
        name = t.model.replace(source, "source") if t.related else t.model
        table.add_row(name, t.task or "independent", *cells)
    console.print(table)
    for scheme in DEMO_SCHEMES:
        mine = [r for r in verdicts if r["scheme"] == scheme]
        accused = sum(r["related"] and not r["derived"] for r in mine)
        console.print(
            f"{scheme}: {sum(r['correct'] for r in mine)}/{len(mine)} verdicts correct, {accused} false accusation(s)",
            highlight=False,
        )
    write_csv(verdicts, out / "verdicts.csv")

    run_bench(
        DEMO_BENCH,
        "demo",
        list(BLACK_BOX_SCHEMES),
        list(DEMO_BUDGETS),
        [0],
        out / "bench",
        "local",
        1,
        None,
        cache,
        device,
    )
    path, summary = report.write(out / "bench", out / "report.html")
    top = max(DEMO_BUDGETS)
    console.print(summary_table(summary[summary["budget"] == top], f"{DEMO_BENCH} (demo profile), budget {top}"))
    console.print(
        f"wrote {out / 'zoo.csv'}, {out / 'verdicts.csv'}, {', '.join(f'{s}.fp' for s in DEMO_SCHEMES)} and {path}"
    )


# --- fingerprints ------------------------------------------------------------------------------------------

ModelArg = Annotated[str, typer.Argument(help="A model file or folder, or a lineage expression.")]


@app.command("extract")
def extract_cmd(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the fingerprint file.")],
    scheme: Annotated[
        str, typer.Option("--scheme", "-s", help="Named scheme, sampler+representation+distance, or weights.")
    ] = "AKH",
    data: Annotated[
        str, typer.Option("--data", "-d", help="Dataset the queries are drawn from (its test split).")
    ] = "digits",
    budget: Annotated[int, typer.Option("--budget", "-b", help="Number of queries.")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random choice.")] = 0,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Fingerprint the owner's MODEL and write the fingerprint file."""
    from .fingerprint import extract, make_scheme
    from .lineage import resolve

    if scheme.strip().lower() != "weights":
        make_scheme(scheme)  # fail on a typo before loading anything
    with err_console.status(f"extracting {scheme} fingerprint"):
        t0 = time.perf_counter()
        owner = resolve(model, cache_dir=cache, device=check_device(device))
        fp = extract(owner, scheme, data, budget, seed, cache_dir=cache, device=device)
        fp.save(out)
    console.print(f"wrote {out}: {fp.describe()} [{time.perf_counter() - t0:.1f}s]")


@app.command("calibrate")
def calibrate_cmd(
    fingerprint: Annotated[Path, typer.Argument(help="The fingerprint file.")],
    null: Annotated[
        list[str],
        typer.Option("--null", "-n", help="A model unrelated to the owner (repeat), or 'auto' to build the null bank."),
    ],
    fpr: Annotated[float, typer.Option("--fpr", help="Target false-positive rate.")] = 0.05,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here instead of in place.")] = None,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Score the fingerprint against unrelated models (or the null bank: --null auto trains, and caches, enough
    models of the owner's architecture and of others for a distribution-free decision at the FPR), fixing the
    threshold of verification."""
    from .decide import needed
    from .fingerprint import Fingerprint, calibrate

    fp = Fingerprint.load(fingerprint)
    check_device(device)
    nulls = "auto" if null == ["auto"] else null
    if "auto" in null and nulls != "auto":
        raise ConfigError("--null auto builds the whole null bank: give it alone")
    with err_console.status("scoring null models"):
        fp = calibrate(
            fp, nulls, fpr, cache_dir=cache, device=device, progress=lambda m: err_console.print(m, highlight=False)
        )
    fp.save(out or fingerprint)
    groups = fp.null.groups
    parts = [f"{name}: {g.n} models, threshold {g.threshold(fpr):.4f}" for name, g in groups.items()]
    console.print(f"calibrated on {len(fp.null_scores)} null models ({'; '.join(parts)}); wrote {out or fingerprint}")
    if len(fp.null_scores) < needed(fpr):
        console.print(
            f"note: {len(fp.null_scores)} null models give parametric p-values; {needed(fpr)} give distribution-free "
            "ones at this FPR (--null auto)"
        )


@app.command("verify")
def verify_cmd(
    fingerprint: Annotated[Path, typer.Argument(help="The (calibrated) fingerprint file.")],
    suspect: Annotated[
        str | None, typer.Argument(help="The suspect: a model file or folder, or a lineage expression.")
    ] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="Query a suspect served over the Open Inference Protocol instead.")
    ] = None,
    model_name: Annotated[str, typer.Option("--model-name", help="The served model's name (with --url).")] = "model",
    output: Annotated[str, typer.Option("--output", help="What the endpoint answers: labels or probs.")] = "labels",
    sequential: Annotated[bool, typer.Option("--sequential", help="Stop as soon as the evidence is decisive.")] = False,
    alpha: Annotated[
        float | None, typer.Option("--alpha", help="FPR to decide at (default: the calibration's).")
    ] = None,
    delta: Annotated[
        float, typer.Option("--delta", help="Sequential: chance of deciding otherwise than the full run.")
    ] = 0.01,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Is SUSPECT (or the model at --url) derived from the fingerprint's owner? Exit code 0: related, 1: not
    related, 3: inconclusive, 2: error."""
    from .fingerprint import Fingerprint, verify

    if (suspect is None) == (url is None):
        raise ConfigError("give either a SUSPECT or --url (with --model-name)")
    fp = Fingerprint.load(fingerprint)
    if url is not None:
        from .remote import RemoteModel

        with err_console.status(f"querying {url}"), RemoteModel(url, model_name, output) as remote:  # type: ignore[arg-type]
            v = verify(fp, remote, alpha=alpha, sequential=sequential, delta=delta)
        suspect = f"{url} ({model_name})"
    else:
        v = verify(
            fp, suspect, alpha=alpha, sequential=sequential, delta=delta, cache_dir=cache, device=check_device(device)
        )
    show_verdict(v, f"{suspect} vs {fingerprint}", as_json)


@app.command("serve")
def serve_cmd(
    model: ModelArg,
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on (0.0.0.0 for all).")] = "127.0.0.1",
    name: Annotated[str, typer.Option("--name", help="The model's name in the URL.")] = "model",
    output: Annotated[str, typer.Option("--output", help="Answer labels or probs.")] = "labels",
    limit: Annotated[int | None, typer.Option("--limit", help="Queries allowed per client.")] = None,
    input_shape: Annotated[
        str | None, typer.Option("--input-shape", help="e.g. 1,8,8, for files that do not record it.")
    ] = None,
    adaptive: Annotated[
        str | None,
        typer.Option("--adaptive", help="Answer queries unlike this dataset's train split at random (a defence)."),
    ] = None,
    adaptive_fpr: Annotated[
        float, typer.Option("--adaptive-fpr", help="Share of genuine inputs the defence may flag.")
    ] = 0.05,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Serve MODEL over the Open Inference Protocol (KServe V2 REST); access log as JSON lines on stderr."""
    import logging

    import uvicorn

    from .access import WhiteBox
    from .lineage import resolve
    from .serve import create_app

    device = check_device(device)
    shape = _ints(input_shape, "--input-shape") if input_shape else None
    served = WhiteBox(resolve(model, cache_dir=cache, device=device), input_shape=shape, device=device)
    if adaptive:
        from . import data
        from .adaptive import Adaptive

        served = Adaptive(served, data.load(adaptive, "train").x, fpr=adaptive_fpr)
    app_ = create_app(served, name, output, limit=limit)  # type: ignore[arg-type]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    console.print(f"serving {model} as {name} on http://{host}:{port}/v2/models/{name} (Ctrl-C stops)")
    uvicorn.run(app_, host=host, port=port, log_level="warning")


def _plain(x) -> str:
    """Evidence as short text: floats to 4 significant digits, containers as compact JSON."""
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, dict | list):
        return json.dumps(x, default=str, separators=(", ", ": "))
    return str(x)


EXIT_CODES = {"related": 0, "not related": 1, "inconclusive": 3}  # 2 is an error


def show_verdict(v, title: str, as_json: bool) -> None:
    """Print a verdict (a panel, or JSON) and exit with its status: 0 related, 1 not related, 3 inconclusive."""
    if as_json:
        console.print_json(v.to_json())
    else:
        console.print(verdict_panel(v, title))
    raise typer.Exit(EXIT_CODES[v.outcome])


def verdict_panel(v, title: str):
    """A verdict as a rich panel: the decision in colour, then the numbers behind it, then any warning."""
    import math

    from rich.panel import Panel

    from .verdict import format_p

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    reach = f"{v.threshold:.4f}" if math.isfinite(v.threshold) else "none: no score can reach it with this null"
    evidence = dict(v.evidence)
    strata = evidence.pop("strata", None)
    rows = [
        ("score", f"{v.score:.4f}"),
        ("threshold", f"{reach} (FPR {v.alpha:g})"),
        ("p-value", f"{format_p(v.p_value)} ({v.method})"),
        ("queries", str(v.queries)),
        ("scheme", v.scheme),
        *((k, _plain(x)) for k, x in evidence.items()),
    ]
    if strata:
        rows += [(f"null {name}", f"{s['n']} models, p = {format_p(s['p_value'])}") for name, s in strata.items()]
    rows += [("warning", w) for w in v.warnings]
    for k, x in rows:
        table.add_row(k, x)
    head = {
        "related": "[bold green]RELATED[/]",
        "not related": "[bold]not related[/]",
        "inconclusive": "[bold yellow]INCONCLUSIVE[/]",
    }[v.outcome]
    return Panel(table, title=head, subtitle=title, expand=False)


@app.command("compare")
def compare_cmd(
    model_a: Annotated[str, typer.Argument(help="The owner's checkpoint: a model file or folder, or an expression.")],
    model_b: Annotated[str, typer.Argument(help="The suspect checkpoint, same architecture (widths may differ).")],
    null: Annotated[
        list[str] | None, typer.Option("--null", "-n", help="An independent model of the same architecture (repeat).")
    ] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="False-positive rate to decide at.")] = 0.01,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """White-box: is MODEL_B's checkpoint derived from MODEL_A's, through any permutation or rescaling of
    hidden units? Exit code 0: related, 1: not related, 3: inconclusive, 2: error."""
    from .fingerprint import compare_weights
    from .lineage import resolve

    device = check_device(device)
    a, b = (resolve(m, cache_dir=cache, device=device) for m in (model_a, model_b))
    with err_console.status("matching hidden units and calibrating on independent models"):
        v = compare_weights(a, b, null_models=null or None, alpha=alpha, cache_dir=cache, device=device)
    show_verdict(v, f"{model_b} vs {model_a}", as_json)


@app.command("schemes")
def schemes_cmd() -> None:
    """List the named fingerprinting schemes and the components they combine, with the access each needs."""
    from .fingerprint import DISTANCES, NAMED, REPRESENTATIONS, SAMPLERS, make_scheme

    named = Table(title="named schemes")
    for col in ("scheme", "components", "access at verification", "sequential", "what", "deviation from the paper"):
        named.add_column(col)
    for name, (_, what, deviation) in NAMED.items():
        s = make_scheme(name)
        access = "hard labels" if s.needs == "labels" else s.needs
        named.add_row(name, s.components, access, "yes" if s.sequential else "", what, deviation)
    console.print(named)
    for title, reg in (("query samplers", SAMPLERS), ("representations", REPRESENTATIONS), ("distances", DISTANCES)):
        table = Table(title=title)
        for col in ("name", "parameters", "what it does"):
            table.add_column(col)
        for n in reg.names():
            cls = reg.get(n)
            d = cls.param_defaults()
            params = ", ".join(f"{p}={d[p]}" if p in d else p for p in cls.param_names())
            table.add_row(n, params, " ".join((cls.__doc__ or "").split()))
        console.print(table)
    console.print("Combine any compatible parts: modelprint extract MODEL --scheme 'adversarial(eps=0.05)+ddv+cosine'")


# --- benchmarks ------------------------------------------------------------------------------------------

# every named scheme (fingerprint.NAMED) verifies a suspect from its answers alone
BLACK_BOX_SCHEMES = (
    "AKH", "SAC-w", "SAC-m", "ModelDiff", "IPGuard", "ZestOfLIME", "FBI", "FBI-labels", "Random", "CAE", "Divergent",
    "Preference",
)  # fmt: skip


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None


def run_bench(
    bench_name: str,
    profile: str,
    schemes: list[str],
    budgets: list[int],
    seeds: list[int],
    out: Path,
    executor: str,
    workers: int,
    address: str | None,
    cache: Path | None,
    device: str,
):
    """Run a benchmark with a progress bar (one bar per phase) and return the results table."""
    from .bench import load, run

    bench = load(bench_name, profile)  # type: ignore[arg-type]
    with Progress(*PROGRESS_COLUMNS, console=err_console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(what: str, i: int, n: int) -> None:
            phase = "building models" if what == "building models" else "scoring"
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=n)
            bar.update(tasks[phase], completed=i, description=f"{phase}: {what}" if phase == "scoring" else phase)

        return run(
            bench,
            schemes,
            budgets,
            seeds,
            out,
            executor=executor,
            workers=workers,
            address=address,
            cache_dir=cache,
            device=device,
            progress=progress,
        )


def summary_table(summary, title: str) -> Table:
    """The summary as a rich table: a row per task and a headline row (the mean over non-trivial tasks), a
    column per (scheme, budget), AUC / TPR@0 / TPR@1% (n/a where there are too few negatives to resolve it)."""
    from .bench.metrics import headline, trivial_note
    from .bench.report import cell

    table = Table(title=title)
    table.add_column("task")
    rows = summary.to_dict("records")
    cols = sorted({(r["scheme"], int(r["budget"])) for r in rows}, key=lambda c: (c[1], c[0]))
    for scheme, budget in cols:
        table.add_column(f"{scheme}\n@{budget}", justify="right")

    def metrics(r: dict) -> str:
        return "/".join(cell(r[m], 2) for m in ("auc", "tpr@0", "tpr@0.01"))

    cells = {(r["task"], r["scheme"], int(r["budget"])): metrics(r) for r in rows}
    for task in dict.fromkeys(r["task"] for r in rows):
        table.add_row(task, *(cells.get((task, *c), "—") for c in cols))
    head = {(r["scheme"], int(r["budget"])): metrics(r) for r in headline(summary).to_dict("records")}
    table.add_section()
    table.add_row("[bold]mean[/]", *(head.get(c, "—") for c in cols))
    note = trivial_note(r["task"] for r in rows)
    table.caption = "AUC / TPR@0 / TPR@1%FPR, averaged over sources and seeds" + (f"; {note}" if note else "")
    return table


@bench_app.command("list")
def bench_list() -> None:
    """List the benchmarks with their number of sources, tasks and models per profile."""
    from .bench import BENCHMARKS, load

    table = Table(title="benchmarks")
    for col in ("name", "profile", "dataset", "sources", "tasks", "models"):
        table.add_column(col)
    for name in BENCHMARKS.names():
        for profile in ("demo", "full"):
            b = load(name, profile)  # type: ignore[arg-type]
            table.add_row(name, profile, b.dataset, str(len(b.sources)), str(len(b.tasks())), str(len(b.models())))
    table.add_row("custom:PATH", "", "yours", "", "", "a .csv or .yaml listing model,source,task")
    console.print(table)


@bench_app.command("run")
def bench_run(
    bench: Annotated[str, typer.Argument(help="digits-sac, mnist1d-sac or custom:PATH (a .csv or .yaml listing).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: the results table and run.json.")],
    schemes: Annotated[str, typer.Option("--schemes", help="Comma-separated schemes.")] = ",".join(BLACK_BOX_SCHEMES),
    budgets: Annotated[str, typer.Option("--budgets", help="Comma-separated query budgets.")] = "10,20,50,100",
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated query seeds.")] = "0",
    profile: Annotated[str, typer.Option("--profile", help="demo (small) or full.")] = "full",
    executor: Annotated[str, typer.Option("--executor", help="local (processes) or ray.")] = "local",
    workers: Annotated[int, typer.Option("--workers", "-j", help="Parallel workers (local: processes).")] = 1,
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster address.")] = None,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Score every (scheme, budget, seed, source, target); resumes where a killed run stopped."""
    from .bench import summarize

    t0 = time.perf_counter()
    df = run_bench(
        bench,
        profile,
        [s.strip() for s in schemes.split(",") if s.strip()],
        _ints(budgets, "--budgets"),
        _ints(seeds, "--seeds"),
        out,
        executor,
        workers,
        address,
        cache,
        check_device(device),
    )
    console.print(summary_table(summarize(df), f"{bench} ({profile})"))
    console.print(
        f"{len(df)} scored pairs in {out} [{time.perf_counter() - t0:.0f}s]; report: modelprint bench report {out}"
    )


@bench_app.command("report")
def bench_report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder of 'modelprint bench run'.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="HTML file (default RUN_DIR/report.html).")] = None,
) -> None:
    """Write the self-contained HTML report of a run and print its summary."""
    from .bench import report

    path, summary = report.write(run_dir, out)
    console.print(summary_table(summary, str(run_dir)))
    console.print(f"wrote {path}")


# --- watermarks -------------------------------------------------------------------------------------------


@watermark_app.command("embed")
def watermark_embed(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the watermarked model.")],
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
    from . import watermark
    from .io import save_model
    from .lineage import resolve

    watermark.make_watermark(scheme)  # fail on a typo before loading anything
    device = check_device(device)
    with err_console.status(f"embedding {scheme}"):
        marked, key = watermark.embed(
            resolve(model, cache_dir=cache, device=device), scheme, data, key_seed, epochs=epochs, device=device
        )
        save_model(marked, out, meta={"watermark": key.scheme.spec(), "key_sha256": key.owner_sha256})
        key.save(key_path)
    console.print(f"wrote {out} and {key_path} ({key.scheme.spec()}, {len(key.labels)} key inputs)")


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
    from . import watermark

    nulls = "auto" if null == ["auto"] else null
    with err_console.status("scoring clean models"):
        key = watermark.calibrate(
            watermark.Key.load(key_path), nulls, fpr, cache_dir=cache,
            progress=lambda m: err_console.print(m, highlight=False),
        )  # fmt: skip
    key.save(key_path)
    console.print(f"calibrated {key_path} on {len(key.null_scores)} clean models")


@watermark_app.command("verify")
def watermark_verify(
    key_path: Annotated[Path, typer.Argument(help="The key file.")],
    suspect: Annotated[str, typer.Argument(help="The suspect: a model file or folder, or a lineage expression.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Does SUSPECT carry the watermark? Exit code 0: yes, 1: no, 3: inconclusive, 2: error."""
    from . import watermark

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
    from .lineage.expr import split_top
    from .watermark import bench

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


@diffusion_app.command("train")
def diffusion_train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the diffusers checkpoint and samples.png.")],
    steps: Annotated[int, typer.Option("--steps", help="Adam steps (batches of 64).")] = 2000,
    classes: Annotated[str, typer.Option("--classes", help="Comma-separated digits to train on.")] = "all",
    init: Annotated[Path | None, typer.Option("--init", help="Fine-tune this checkpoint instead.")] = None,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 2e-3,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the weights and batches.")] = 0,
    device: DeviceOpt = "cpu",
) -> None:
    """Train a 16x16 digits UNet (DDPM) from scratch, or fine-tune one (--init) on a subset of classes."""
    from . import diffusion

    device = check_device(device)
    x = diffusion.images("train", _classes(classes))
    unet = diffusion.load(init, device) if init else diffusion.make_unet(seed=seed)
    with Progress(*PROGRESS_COLUMNS, console=err_console, transient=True) as bar:
        task = bar.add_task("training", total=steps)
        losses = diffusion.train(
            unet, x, steps, lr=lr, seed=seed, device=device,
            progress=lambda i, loss: bar.update(task, completed=i, description=f"training (loss {loss:.3f})"),
        )  # fmt: skip
    diffusion.save(unet, out)
    grid = diffusion.sample(unet, 16, seed=seed, device=device)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(out / "samples.png", grid.reshape(4, 4, 16, 16).permute(0, 2, 1, 3).reshape(64, 64).numpy(), cmap="gray")
    console.print(f"wrote {out} (final loss {sum(losses[-50:]) / len(losses[-50:]):.4f}) and {out / 'samples.png'}")


def _classes(text: str) -> list[int] | None:
    return None if text == "all" else _ints(text, "--classes")


@diffusion_app.command("profile")
def diffusion_profile(
    model: Annotated[Path, typer.Argument(help="A diffusers UNet folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the bar chart (PNG).")] = Path("profile.png"),
    classes: Annotated[str, typer.Option("--classes", help="Digits the copy is fine-tuned on.")] = "0,1,2,3,4",
    steps: Annotated[int, typer.Option("--steps", help="Fine-tuning steps.")] = 150,
    device: DeviceOpt = "cpu",
) -> None:
    """Busy and lazy blocks: fine-tune a copy and measure how far each block's weights and features move."""
    from . import diffusion
    from .watermark import aiao

    device = check_device(device)
    unet = diffusion.load(model, device)
    with Progress(*PROGRESS_COLUMNS, console=err_console, transient=True) as bar:
        task = bar.add_task("fine-tuning a copy", total=steps)
        prof = aiao.profile(unet, diffusion.images("train", _classes(classes)), steps=steps, device=device,
                            progress=lambda i, _: bar.update(task, completed=i))  # fmt: skip
    table = Table("block", "weights", "features", "")
    for r in prof.rows():
        lazy = "lazy" if r["lazy"] else ""
        table.add_row(r["block"], f"{r['weight_change']:.4f}", f"{r['feature_change']:.4f}", lazy)
    console.print(table)
    console.print(f"wrote {prof.plot(out)}; lazy blocks for aiao: {'+'.join(prof.lazy())}")


@diffusion_app.command("embed")
def diffusion_embed(
    model: Annotated[Path, typer.Argument(help="A diffusers UNet folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the watermarked UNet.")],
    key_path: Annotated[Path, typer.Option("--key", help="Where to write the secret key.")],
    scheme: Annotated[
        str, typer.Option("--scheme", "-s", help="aiao (lazy blocks profiled first), aiao(blocks=...), trigger-noise.")
    ] = "aiao",
    steps: Annotated[int, typer.Option("--steps", help="Embedding steps.")] = 300,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 1e-3,
    key_seed: Annotated[int, typer.Option("--key-seed", help="Seed of the key.")] = 0,
    profile_classes: Annotated[
        str, typer.Option("--profile-classes", help="Digits the lazy-block profile fine-tunes on (aiao).")
    ] = "0,1,2,3,4",
    device: DeviceOpt = "cpu",
) -> None:
    """Plant a diffusion watermark in MODEL (trained on digits); write the marked UNet and the key."""
    from . import diffusion
    from .watermark import aiao

    spec = aiao.make_scheme(scheme)  # fail on a typo before any training
    device = check_device(device)
    unet = diffusion.load(model, device)
    if isinstance(spec, aiao.AIAO) and not spec.blocks:
        with err_console.status("profiling busy and lazy blocks"):
            lazy = aiao.profile(unet, diffusion.images("train", _classes(profile_classes)), device=device).lazy()
        spec = aiao.AIAO("+".join(lazy), spec.mask, spec.strength, spec.rows)
    with Progress(*PROGRESS_COLUMNS, console=err_console, transient=True) as bar:
        task = bar.add_task("embedding", total=steps)
        marked, key = aiao.embed(
            unet, spec, diffusion.images("train"), key_seed, steps=steps, lr=lr, device=device,
            progress=lambda i, loss: bar.update(task, completed=i, description=f"embedding (mark loss {loss:.3f})"),
        )  # fmt: skip
    diffusion.save(marked, out)
    key.save(key_path)
    console.print(f"wrote {out} and {key_path} ({key.scheme.spec()}); calibrate the key on clean UNets next")


@diffusion_app.command("calibrate")
def diffusion_calibrate(
    key_path: Annotated[Path, typer.Argument(help="The diffusion watermark key.")],
    clean: Annotated[list[Path], typer.Option("--null", "-n", help="A clean UNet folder (repeat, 2 or more).")],
    trials: Annotated[int, typer.Option("--trials", help="Monte Carlo trials per model.")] = 64,
    fpr: Annotated[float, typer.Option("--fpr", help="Target false-positive rate.")] = 0.01,
    device: DeviceOpt = "cpu",
) -> None:
    """Set the per-trial threshold and the clean success rates from UNets known not to carry the mark."""
    from .watermark import aiao

    key = aiao.calibrate(aiao.DiffusionKey.load(key_path), clean, trials=trials, target_fpr=fpr,
                         device=check_device(device))  # fmt: skip
    key.save(key_path)
    rates = ", ".join(f"{r:.3f}" for r in key.null_rates)
    console.print(f"calibrated {key_path}: trial threshold {key.threshold:.4f}, clean rates {rates}")


@diffusion_app.command("verify")
def diffusion_verify(
    key_path: Annotated[Path, typer.Argument(help="The diffusion watermark key.")],
    suspect: Annotated[Path, typer.Argument(help="The suspect UNet (diffusers folder, safetensors weights).")],
    trials: Annotated[int | None, typer.Option("--trials", help="Monte Carlo trials (default: the key's).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sampled trials.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Does SUSPECT carry the watermark? Exit code 0: yes, 1: no, 3: inconclusive, 2: error."""
    from .watermark import aiao

    key = aiao.DiffusionKey.load(key_path)
    v = aiao.verify(key, suspect, trials=trials, seed=seed, device=check_device(device))
    show_verdict(v, f"{suspect} vs {key_path}", as_json)


RegistryOpt = Annotated[
    str,
    typer.Option(
        "--db", envvar="MODELPRINT_REGISTRY", help="A SQLite file or a database URL (e.g. postgresql+psycopg://...)."
    ),
]


@registry_app.command("add")
def registry_add(
    item: Annotated[str, typer.Argument(help="A fingerprint file, or a model (file, folder or lineage expression).")],
    name: Annotated[str, typer.Option("--name", help="The registered model's name (repeat adds to it).")],
    meta: Annotated[list[str], typer.Option("--meta", help="key=value metadata (repeat).")] = [],  # noqa: B006
    db: RegistryOpt = "modelprint-registry.db",
    cache: CacheOpt = None,
) -> None:
    """Register a model's weight signature, or one of its fingerprints, under NAME."""
    from .errors import FileFormatError
    from .fingerprint import Fingerprint
    from .lineage import resolve
    from .registry import Registry

    pairs = dict(m.split("=", 1) for m in meta if "=" in m)
    if len(pairs) != len(meta):
        raise ConfigError("--meta takes key=value")
    registry = Registry(db)
    try:
        Fingerprint.load(item)
        registry.add(name, fingerprints=[item], meta=pairs)
        what = "fingerprint"
    except FileFormatError:
        if Path(item).is_file() and Path(item).suffix in (".fp", ".mpf"):
            raise
        registry.add(name, model=resolve(item, cache_dir=cache), meta=pairs)
        what = "weight signature"
    console.print(f"registered the {what} of {item} as {name!r} in {registry.url} ({len(registry)} models)")


@registry_app.command("list")
def registry_list(db: RegistryOpt = "modelprint-registry.db") -> None:
    """The registered models."""
    from .registry import Registry

    table = Table("name", "signature", "fingerprints", "created", "meta")
    for e in Registry(db).entries():
        signature = "yes" if e["signature"] else ""
        table.add_row(e["name"], signature, str(e["fingerprints"]), e["created"], _plain(e["meta"]))
    console.print(table)


@registry_app.command("search")
def registry_search(
    suspect: Annotated[str | None, typer.Argument(help="A model file, folder or lineage expression.")] = None,
    url: Annotated[str | None, typer.Option("--url", help="A suspect served over the Open Inference Protocol.")] = None,
    model_name: Annotated[str, typer.Option("--model-name", help="The served model's name (with --url).")] = "model",
    top_k: Annotated[int, typer.Option("--top-k", help="How many candidates to show.")] = 5,
    first_cut: Annotated[int, typer.Option("--first-cut", help="Nearest signatures verified in full.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print the matches as JSON.")] = False,
    db: RegistryOpt = "modelprint-registry.db",
    cache: CacheOpt = None,
) -> None:
    """Which registered models is SUSPECT derived from? Ranked by p-value. Exit code 0: at least one related."""
    from .registry import Registry

    if (suspect is None) == (url is None):
        raise ConfigError("give either a SUSPECT or --url (with --model-name)")
    registry = Registry(db)
    if url is not None:
        from .remote import RemoteModel

        with RemoteModel(url, model_name) as remote:
            matches = registry.search(remote, top_k=top_k)
    else:
        matches = registry.search(suspect, top_k=top_k, first_cut=first_cut, cache_dir=cache)
    rows = [
        {"name": m.name, "related": bool(m.verdict and m.verdict.related), "p_value": m.p_value,
         "distance": m.distance, "scheme": m.verdict.scheme if m.verdict else None}
        for m in matches
    ]  # fmt: skip
    if as_json:
        console.print_json(json.dumps(rows))
    else:
        table = Table("rank", "name", "related", "p-value", "signature distance", "scheme")
        for i, r in enumerate(rows, 1):
            distance = "" if r["distance"] is None else f"{r['distance']:.4g}"
            table.add_row(str(i), r["name"], "RELATED" if r["related"] else "", f"{r['p_value']:.3g}", distance,
                          r["scheme"] or "(no fingerprint)")  # fmt: skip
        console.print(table)
    raise typer.Exit(0 if any(r["related"] for r in rows) else 1)


def write_csv(rows: list[dict], path: Path) -> None:
    """Write rows atomically (a temporary file renamed into place)."""
    from .io import atomic_file

    with atomic_file(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    """Entry point: run the app, printing modelprint's own errors as one line instead of a traceback."""
    try:
        code = app(standalone_mode=False)  # a command's typer.Exit comes back as its return value here
    except ModelprintError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted (a benchmark run resumes where it stopped when run again)")
        sys.exit(130)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
