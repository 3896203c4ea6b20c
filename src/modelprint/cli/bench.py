"""``modelprint bench`` and ``modelprint demo``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from .common import (
    PROGRESS_COLUMNS,
    CacheOpt,
    DeviceOpt,
    _ints,
    app,
    check_device,
    console,
    err_console,
    write_csv,
)
from .zoo import build_table

bench_app = typer.Typer(help="Benchmark fingerprint schemes: run, summarise, report.", no_args_is_help=True)

# every named scheme (fingerprint.NAMED) verifies a suspect from its answers alone; spelled out here because the
# CLI does not import torch until a command runs (tests/test_cli.py checks that the two agree)
BLACK_BOX_SCHEMES = (
    "AKH", "SAC-w", "SAC-m", "ModelDiff", "IPGuard", "ZestOfLIME", "FBI", "FBI-labels", "Random", "CAE", "Divergent",
    "Preference", "Preference-rare", "DeepFool", "UAP", "UAP-shift", "DeepJudge-RobD", "DeepJudge-JSD", "MetaV",
    "MetaV-datafree", "TAFA",
)  # fmt: skip


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
    from ..bench import load, run

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
    from ..bench.metrics import headline, trivial_note
    from ..bench.report import cell

    table = Table(title=title)
    table.add_column("task", overflow="fold")
    rows = summary.to_dict("records")
    cols = sorted({(r["scheme"], int(r["budget"])) for r in rows}, key=lambda c: (c[1], c[0]))
    for scheme, budget in cols:
        table.add_column(f"{scheme}\n@{budget}", justify="right", overflow="fold")  # wrapped, never cut

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
    from ..bench import BENCHMARKS, load

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
    from ..bench import summarize
    from ..bench.runner import skipped

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
    for note in skipped(out):
        console.print(f"skipped {note}", highlight=False)
    console.print(
        f"{len(df)} scored pairs in {out} [{time.perf_counter() - t0:.0f}s]; report: modelprint bench report {out}"
    )


@bench_app.command("report")
def bench_report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder of 'modelprint bench run'.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="HTML file (default RUN_DIR/report.html).")] = None,
) -> None:
    """Write the self-contained HTML report of a run and print its summary."""
    from ..bench import report

    path, summary = report.write(run_dir, out)
    console.print(summary_table(summary, str(run_dir)))
    console.print(f"wrote {path}")


# FPR 0.05: the null bank then needs 90 models per architecture (270 in all, about 6 minutes on 2 cores), which
# keeps the demo within 10 minutes; at 0.01 it would need 1377 (see decide.needed)
DEMO_BENCH, DEMO_BUDGETS, DEMO_FPR = "digits-sac", (20, 100), 0.05
DEMO_SCHEMES = ("AKH", "Divergent")
# the schemes of the demo's benchmark: all but the slowest to extract (UAP and MetaV train surrogates and a
# network of their own, TAFA solves linear programs per query, Preference-rare trains 48 references), so the demo
# stays within 10 minutes
DEMO_BENCH_SCHEMES = tuple(
    s
    for s in BLACK_BOX_SCHEMES
    if s not in ("UAP", "UAP-shift", "DeepJudge-JSD", "MetaV", "MetaV-datafree", "TAFA", "Preference-rare")
)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the report and the model cache.")] = Path(
        "demo-out"
    ),
    device: DeviceOpt = "cpu",
) -> None:
    """The whole story on the bundled digits: build the demo zoo, verify every suspect with calibrated
    fingerprints, benchmark every black-box scheme at budgets 20 and 100, and write OUT/report.html."""
    from ..bench import load, report
    from ..fingerprint import calibrate, extract, verify
    from ..lineage import build

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
    table.add_column("task", overflow="fold")
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
        list(DEMO_BENCH_SCHEMES),
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
