"""What every command shares: the app, consoles, common options, and how a verdict is shown."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .. import __version__
from ..errors import ConfigError

app = typer.Typer(
    help="Is this suspect model mine, or derived from mine?", no_args_is_help=True, pretty_exceptions_enable=False
)
console = Console(width=None if sys.stdout.isatty() else 160)  # logs keep wide tables readable
err_console = Console(stderr=True)

CacheOpt = Annotated[
    Path | None,
    typer.Option("--cache", help="Zoo cache folder (default: $MODELPRINT_CACHE or ~/.cache/modelprint/zoo)."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="MODELPRINT_API_KEY",
        help="Key for --url (better: $MODELPRINT_API_KEY).",
        show_default=False,
    ),
]


PROGRESS_COLUMNS = (
    TextColumn("[progress.description]{task.description}"),
    BarColumn(),
    TextColumn("{task.completed}/{task.total}"),
    TimeElapsedColumn(),
    TimeRemainingColumn(),
)


def accuracy_on_test(model, data: str, device: str = "cpu") -> float:
    """``model``'s accuracy on ``data``'s test split: what the commands that write a model report of it."""
    from ..data import load
    from ..lineage.train import accuracy

    test = load(data, "test")
    return accuracy(model, test.x, test.y, device)


def check_device(device: str) -> str:
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        import torch  # here, not at the top: --help and usage errors answer without loading torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA device is available (torch {torch.__version__})")
        return device
    raise ConfigError(f"--device must be cpu, cuda or cuda:N, got {device!r}")


def _version(value: bool) -> None:
    if value:
        import torch

        console.print(f"modelprint {__version__} (torch {torch.__version__})")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch",
            help="Your network's class, my_pkg.nets:Net or nets.py:Net: weights-only files (state dicts, "
            ".safetensors) given to any command are loaded into it.",
        ),
    ] = None,
    arch_kwargs: Annotated[
        str, typer.Option("--arch-kwargs", help="JSON keyword arguments of --arch, e.g. '{\"width\": 64}'.")
    ] = "{}",
) -> None:
    """modelprint: fingerprints, watermarks and integrity checks for neural networks."""
    if arch is None and arch_kwargs != "{}":
        raise ConfigError("--arch-kwargs needs --arch")
    if arch is not None:
        try:
            options = json.loads(arch_kwargs)
        except ValueError as e:
            raise ConfigError(f"--arch-kwargs is not JSON ({e})") from None
        if not isinstance(options, dict):
            raise ConfigError("--arch-kwargs must be a JSON object of keyword arguments")
        from ..io import default_arch

        default_arch(arch, **options)


ModelArg = Annotated[str, typer.Argument(help="A model file or folder, or a lineage expression.")]


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None


def write_csv(rows: list[dict], path: Path) -> None:
    """Write rows atomically (a temporary file renamed into place)."""
    from ..io import atomic_file

    with atomic_file(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _plain(x) -> str:
    """Evidence as short text: floats to 4 significant digits, containers as compact JSON."""
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, dict | list):
        text = json.dumps(x, default=str, separators=(", ", ": "))
        return text if len(text) <= 400 else f"{text[:200]} ... (all of it: --json)"
    return str(x)


# 0: the claim checked holds; 2 is an error
EXIT_CODES = {"related": 0, "not related": 1, "inconclusive": 3, "identical": 0, "modified": 1, "backdoored": 0,
              "clean": 1, "valid": 0, "invalid": 1}  # fmt: skip


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

    from ..verdict import format_p

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    reach = f"{v.threshold:.4f}" if math.isfinite(v.threshold) else "none: no score can reach it with this null"
    evidence = dict(v.evidence)
    strata = evidence.pop("strata", None)
    rows = [
        ("score", f"{v.score:.4f}"),
        ("threshold", f"{reach} (FPR {v.alpha:g})" if math.isfinite(v.p_value) else f"{reach} (a deterministic check)"),
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
        "identical": "[bold green]IDENTICAL[/]",
        "modified": "[bold red]MODIFIED[/]",
        "backdoored": "[bold red]BACKDOORED[/]",
        "clean": "[bold]clean[/]",
        "valid": "[bold green]VALID[/]",
        "invalid": "[bold red]INVALID[/]",
    }[v.outcome]
    return Panel(table, title=head, subtitle=title, expand=False)


def registry_table(title: str, registry, first: str = "name") -> Table:
    """A registry of named classes as a table: name, parameters with their defaults, and the docstring."""
    table = Table(title=title)
    for col in (first, "parameters", "what it does"):
        table.add_column(col)
    for name in registry.names():
        cls = registry.get(name)
        defaults = cls.param_defaults()
        params = ", ".join(f"{p}={defaults[p]}" if p in defaults else p for p in cls.param_names())
        table.add_row(name, params, " ".join((cls.__doc__ or "").split()))
    return table
