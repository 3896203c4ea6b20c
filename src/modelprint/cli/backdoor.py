"""``modelprint backdoor``: does a model hide a backdoor? Scan it with a detector calibrated on clean models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import ConfigError
from .common import (
    ApiKeyOpt,
    CacheOpt,
    DeviceOpt,
    ModelArg,
    check_device,
    console,
    err_console,
    registry_table,
    show_verdict,
    write_csv,
)

backdoor_app = typer.Typer(help="Does a model hide a backdoor? Scan it against clean models.", no_args_is_help=True)


@backdoor_app.command("scan")
def backdoor_scan(
    model: ModelArg,
    null: Annotated[list[str], typer.Option("--null", "-n", help="A clean model of the same task (repeat, 2+).")],
    data: Annotated[str, typer.Option("--data", "-d", help="Clean inputs of the task (a dataset name).")] = "digits",
    detector: Annotated[str, typer.Option("--detector", help="A detector spec (modelprint backdoor detectors).")] = (
        "neural-cleanse"
    ),
    alpha: Annotated[float, typer.Option("--alpha", help="False-positive rate on clean models.")] = 0.05,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write the reversed trigger and mask norms (PNG).")
    ] = None,
    report: ReportOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Does MODEL hide a backdoor? Runs the detector on MODEL and on every --null clean model and decides MODEL's
    score against theirs. Exit code 0: backdoored, 1: clean, 3: inconclusive, 2: error."""
    from ..integrity import backdoor

    device = check_device(device)
    with err_console.status(f"scanning {len(null)} clean models"):
        nulls = backdoor.scores(detector, null, data, cache_dir=cache, device=device)
    with err_console.status(f"scanning {model}"):
        v = backdoor.scan(model, data, detector, null_scores=nulls, alpha=alpha, cache_dir=cache, device=device)
    finish(v, plot, report, f"{model} ({detector})", as_json, data, nulls)


ReportOpt = Annotated[
    Path | None, typer.Option("--report", help="Write an HTML report: the trigger, every class, the null.")
]


def finish(v, plot: Path | None, report: Path | None, title: str, as_json: bool, data: str, nulls=None) -> None:
    """Write the plot and the report if asked, then show the verdict (the trigger's mask and pattern only in JSON:
    images, not numbers to read)."""
    if plot is not None and "mask" in v.evidence:
        write_plot(v.evidence, plot)
        err_console.print(f"wrote {plot}")
    if report is not None:  # (pandas and the page writer only when a report is asked for)
        from ..fingerprint.helpers import held_out
        from ..integrity import report as pages

        pages.write(report, v, f"modelprint backdoor report: {title}", nulls, held_out(data)[0][:8])
        err_console.print(f"wrote {report}")
    images = {k: v.evidence.pop(k) for k in ("mask", "pattern") if k in v.evidence}
    if as_json:
        v.evidence.update(images)
    show_verdict(v, title, as_json)


@backdoor_app.command("diff")
def backdoor_diff(
    trusted: Annotated[str, typer.Argument(help="The trusted model (a file, folder or expression).")],
    suspect: Annotated[str | None, typer.Argument(help="The suspect derived from it.")] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="A suspect served over the Open Inference Protocol, as labels.")
    ] = None,
    model_name: Annotated[str, typer.Option("--model-name", help="The served model's name (with --url).")] = "model",
    api_key: ApiKeyOpt = None,
    data: Annotated[str, typer.Option("--data", "-d", help="Clean inputs of the task (a dataset name).")] = "digits",
    detector: Annotated[
        str | None,
        typer.Option(
            "--detector", help="neural-cleanse (white-box, the default) or label-search (labels only; with --url)."
        ),
    ] = None,
    largest: Annotated[float, typer.Option("--largest", help="Largest trigger, a fraction of the input.")] = 0.25,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write the trigger found and mask norms (PNG).")] = None,
    report: ReportOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Does SUSPECT (or the model at --url) hide a backdoor that TRUSTED does not? Searches the smallest trigger
    that sends the suspect to a class and not TRUSTED: from gradients (neural-cleanse: TRUSTED keeps its answers),
    or from labels alone (label-search, the default with --url; some 500,000 queries). Exit code 0: backdoored
    (a trigger found), 1: clean, 2: error."""
    from contextlib import nullcontext

    from ..integrity import backdoor

    if (suspect is None) == (url is None):
        raise ConfigError("give either a SUSPECT or --url (with --model-name)")
    detector = detector or ("neural-cleanse" if url is None else "label-search")
    if url is not None and backdoor.make_detector(detector).needs != "labels":
        raise ConfigError(f"{detector} reads the suspect's gradients; a served suspect needs --detector label-search")
    served = nullcontext(suspect)
    if url is not None:
        from ..remote import RemoteModel

        served, suspect = RemoteModel(url, model_name, "labels", api_key=api_key), f"{url} ({model_name})"
    with err_console.status(f"searching triggers {suspect} obeys and {trusted} does not"), served as model:
        v = backdoor.diff(trusted, model, data, detector, largest=largest, cache_dir=cache,
                          device=check_device(device))  # fmt: skip
    finish(v, plot, report, f"{suspect} vs {trusted} ({detector})", as_json, data)


@backdoor_app.command("strip")
def backdoor_strip(
    model: ModelArg,
    inputs: Annotated[Path, typer.Argument(help="Inputs to screen: an .npz file with an array x (or one array).")],
    data: Annotated[str, typer.Option("--data", "-d", help="Clean held-out inputs of the task (a dataset).")] = (
        "digits"
    ),
    alpha: Annotated[float, typer.Option("--alpha", help="Rate at which clean inputs are flagged.")] = 0.05,
    clean: Annotated[int, typer.Option("--clean", help="Clean inputs scored as the null.")] = 200,
    overlays: Annotated[int, typer.Option("--overlays", help="Clean inputs each input is mixed with.")] = 32,
    csv: Annotated[Path | None, typer.Option("--csv", help="Write every input's score and p-value.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Do INPUTS carry a backdoor trigger of MODEL? STRIP mixes each input with clean ones: a triggered input keeps
    its answer (low entropy). Inputs are flagged against clean inputs' entropies; the batch is called backdoored
    when more are flagged than clean inputs would be. Exit code 0: backdoored, 1: clean, 3: inconclusive, 2: error."""
    from ..data.local import read_inputs
    from ..integrity.strip import strip

    x = read_inputs(inputs)
    with err_console.status(f"screening {len(x)} inputs with STRIP"):
        screening = strip(model, x, data, overlays=overlays, clean=clean, cache_dir=cache,
                          device=check_device(device))  # fmt: skip
    if csv is not None:
        pairs = zip(screening.scores.tolist(), screening.p_values.tolist(), strict=True)
        write_csv([{"input": i, "score": s, "p_value": p} for i, (s, p) in enumerate(pairs)], csv)
        err_console.print(f"wrote {csv}")
    show_verdict(screening.verdict(alpha), f"{inputs.name} on {model} (STRIP)", as_json)


@backdoor_app.command("sift")
def backdoor_sift(
    model: ModelArg,
    examples: Annotated[Path, typer.Argument(help="Its training set: an .npz file with arrays x and y.")],
    detector: Annotated[
        str, typer.Option("--detector", help="activation-clustering or spectral-signatures(eps=...).")
    ] = "activation-clustering",
    csv: Annotated[Path | None, typer.Option("--csv", help="Write every example's score and removal.")] = None,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Which examples of MODEL's training set were poisoned? Reads MODEL's last hidden representation of every
    example and removes, class by class, those that stand apart as each paper prescribes (a ranking, no p-value).
    Exit code 0: examples removed, 1: none, 2: error."""
    import torch

    from ..data.local import read_examples
    from ..integrity.sift import sift

    x, y = read_examples(examples)
    with err_console.status(f"sifting {len(x)} examples with {detector}"):
        found = sift(model, (torch.from_numpy(x), torch.from_numpy(y)), detector, cache_dir=cache,
                     device=check_device(device))  # fmt: skip
    if csv is not None:
        rows = zip(y.tolist(), found.scores.tolist(), found.flagged.tolist(), strict=True)
        write_csv([{"example": i, "label": c, "score": s, "removed": f} for i, (c, s, f) in enumerate(rows)], csv)
        err_console.print(f"wrote {csv}")
    table = Table(title=f"{examples.name} sifted by {found.detector}")
    for name in ("class", "examples", "removed"):
        table.add_column(name, justify="right")
    for row in found.per_class():
        table.add_row(str(row["class"]), str(row["examples"]), str(row["flagged"]))
    console.print(table)
    removed = int(found.flagged.sum())
    console.print(f"{removed} of {len(y)} examples removed as poisoned in {model}'s training set")
    raise typer.Exit(0 if removed else 1)


@backdoor_app.command("detectors")
def backdoor_detectors() -> None:
    """The backdoor detectors with their parameters (models, then training sets)."""
    from ..integrity import DETECTORS, SIFTERS

    console.print(registry_table("backdoor detectors", DETECTORS))
    console.print(registry_table("training-set detectors", SIFTERS))


def write_plot(evidence: dict, path: Path) -> None:
    """The reversed trigger's mask for the flagged class beside every class's mask norm."""
    from ..integrity.report import figure
    from ..io import save_figure

    save_figure(figure(evidence), path)
