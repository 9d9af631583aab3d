"""``lossdoctor``: the operator's tool (knowledge base, evaluation, bisect)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bot.cli import EXIT_INTERNAL, EXIT_OK, EXIT_UNREADABLE, EXIT_USAGE
from bot.errors import BotError, UnreadableInput

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None, no_args_is_help=True)
kb_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Inspect and check the knowledge base.")
app.add_typer(kb_app, name="kb")

@kb_app.command("list")
def kb_list() -> None:
    """List the knowledge entries: id, failure class, title."""
    from knowledge.kb import default_kb

    for entry in default_kb().entries:
        typer.echo(f"{entry.id:48} {entry.failure_class:36} {entry.title}")


@kb_app.command("show")
def kb_show(entry_id: str) -> None:
    """Show one entry as JSON."""
    from knowledge.kb import default_kb

    try:
        entry = default_kb().get(entry_id)
    except BotError as exc:
        typer.echo(f"lossdoctor: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    typer.echo(entry.model_dump_json(indent=2))


@kb_app.command("check")
def kb_check() -> None:
    """Validate every entry and run its match / no-match examples."""
    from knowledge.check import check_kb

    try:
        problems, results = check_kb()
    except BotError as exc:
        typer.echo(f"lossdoctor: {exc}", err=True)
        raise typer.Exit(EXIT_INTERNAL) from None
    passed = sum(r.passed for r in results)
    for problem in problems:
        typer.echo(f"FAIL {problem}")
    typer.echo(f"{passed} passed, {len(results) - passed} failed ({len(problems)} problems)")
    raise typer.Exit(EXIT_OK if not problems else EXIT_INTERNAL)


@kb_app.command("train")
def kb_train(
    output: Annotated[Path | None, typer.Option("--output", help="Where to write it (default: the shipped model file).")] = None,
) -> None:
    """Retrain the wording classifier on every labelled report (run it after adding examples or report sets)."""
    from knowledge.classifier import MODEL_FILE, labelled_reports, train
    from knowledge.kb import load_kb

    reports = labelled_reports(load_kb())
    model = train(reports)
    model.write(output or MODEL_FILE)
    typer.echo(f"trained on {model.reports} labelled reports ({len(model.vocabulary)} terms, "
               f"{len(model.classes)} classes): {output or MODEL_FILE}")


@kb_app.command("coverage")
def kb_coverage() -> None:
    """List the evidence that no match/ example exercises (knowledge examples still to write)."""
    from knowledge.check import untested_evidence
    from knowledge.kb import default_kb

    kb = default_kb()
    untested = untested_evidence(kb)
    for u in untested:
        typer.echo(f"{u.entry:48} {u.weight:4.1f}  {u.why}")
    total = sum(1 for e in kb.entries for s in e.evidence if s.weight > 0)
    typer.echo(f"{total - len(untested)} of {total} evidence items are exercised by a match/ example; {len(untested)} are not")


@app.command("eval")
def eval_cmd(
    paths: Annotated[list[Path], typer.Argument(help="One or more JSONL files, scored together.")],
    show_misses: Annotated[bool, typer.Option("--misses", help="List each wrong line.")] = False,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Score the matcher on JSONL files of {user_text, failure_class} lines."""
    from knowledge.evaluate import evaluate, read_jsonl
    from knowledge.kb import default_kb

    rows, places, sets = [], [], []
    for path in paths:
        try:
            read = read_jsonl(path)
        except UnreadableInput as exc:
            typer.echo(f"lossdoctor: {exc}", err=True)
            raise typer.Exit(EXIT_UNREADABLE) from None
        rows += read
        sets += [path.stem] * len(read)
        places += [f"{path}:{number}" if len(paths) > 1 else f"line {number}" for number in range(1, len(read) + 1)]
    result = evaluate(rows, default_kb(), sets)
    if json_output:
        n = result.total or 1
        typer.echo(json.dumps({
            "reports": result.total, "top1": result.top1 / n, "top3": result.top3 / n,
            "abstain_precision": result.abstain_precision, "abstain_recall": result.abstain_recall,
        }))
    else:
        typer.echo(result.summary())
        if show_misses:
            for number, expected, predicted in result.misses:
                typer.echo(f"  {places[number - 1]}: expected {expected}, got {predicted}")


def lossdoctor_main() -> None:
    app(prog_name="lossdoctor")


@app.command("bisect")
def bisect_cmd(
    report_file: Path,
    package: Annotated[str, typer.Option("--package", help="Library to bisect (trl, transformers, peft...).")],
    versions: Annotated[str, typer.Option("--versions", help="Releases: 'A..B' (last patch of each minor series) or 'v1,v2,v3'.")],
    entry_id: Annotated[str, typer.Option("--entry", help="Knowledge entry whose scenario to run (default: the best reproducible match).")] = "",
    failing: Annotated[str, typer.Option("--failing", help="A release known to fail (default: the report's own version of PACKAGE).")] = "",
    expect: Annotated[str, typer.Option("--expect", help="Text the failing run's exception must contain.")] = "",
) -> None:
    """Find the release where a report's failure appears or disappears across a version range."""
    from bot.parse import parse_files
    from knowledge.kb import default_kb
    from knowledge.matcher import rank
    from reproducer.bisect import bisect_command
    from reproducer.engine import plan_for

    try:
        report = parse_files([(str(report_file), report_file.read_bytes())])
    except (OSError, UnreadableInput) as exc:
        typer.echo(f"lossdoctor: cannot read {report_file}: {exc}", err=True)
        raise typer.Exit(EXIT_UNREADABLE) from None
    kb = default_kb()
    try:
        if entry_id:
            entry = kb.get(entry_id)
        else:
            reproducible = [kb.get(c.entry) for c in rank(report, kb) if kb.get(c.entry).reproduce.reproducible]
            if not reproducible:
                typer.echo("lossdoctor: no reproducible knowledge entry matches this report; name one with --entry", err=True)
                raise typer.Exit(EXIT_USAGE)
            entry = reproducible[0]
        scenario = plan_for(report, entry).scenario.model_dump()
        releases: list[str] | str = versions if ".." in versions else [v.strip() for v in versions.split(",") if v.strip()]
        typer.echo(f"bisecting {package} for {entry.id}")
        bisect_command(scenario, package, releases, failing=failing or report.versions.get(package) or None,
                       expect=expect or None, echo=typer.echo)
    except BotError as exc:
        typer.echo(f"lossdoctor: {exc}", err=True)
        raise typer.Exit(EXIT_INTERNAL) from None
