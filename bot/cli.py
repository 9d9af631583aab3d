"""Command-line surfaces: ``diagnose`` (the user's verb) and ``lossdoctor`` (the operator's tool).

Exit codes of ``diagnose``:

    0  diagnosed (verdict matched, reproduced or verified)
    1  internal error (a bug: the message says so, no traceback unless LOSSDOCTOR_DEBUG=1)
    2  usage error (bad option, no input given)
    3  unknown: lossdoctor abstained (nothing fits, or not a loss problem)
    4  unreadable input (missing file, empty, binary, too large)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from bot.errors import BotError, UnreadableInput

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_UNKNOWN, EXIT_UNREADABLE = 0, 1, 2, 3, 4

diagnose_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None, no_args_is_help=True)
kb_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Inspect and check the knowledge base.")
app.add_typer(kb_app, name="kb")


def _err(message: str) -> None:
    sys.stderr.write(f"diagnose: {message}\n")


def read_inputs(files: list[str], max_bytes: int) -> list[tuple[str, bytes]]:
    """Read each FILE (``-`` is standard input) as bytes, refusing oversize input early."""
    parts = []
    for name in files:
        if name == "-":
            data = sys.stdin.buffer.read(max_bytes + 1)
        else:
            path = Path(name)
            try:
                if path.is_dir():
                    raise UnreadableInput(f"{name} is a directory, not a file")
                with path.open("rb") as handle:
                    data = handle.read(max_bytes + 1)
            except OSError as exc:
                raise UnreadableInput(f"cannot read {name}: {exc.strerror or exc}") from exc
        if len(data) > max_bytes:
            raise UnreadableInput(
                f"{name} is larger than {max_bytes // (1024 * 1024)} MB; paste the traceback, the training code and the first log lines instead"
            )
        parts.append((name if name != "-" else "<stdin>", data))
    return parts


@diagnose_app.command()
def diagnose_cmd(
    files: Annotated[Optional[list[str]], typer.Argument(help="Files to read; '-' reads standard input.", show_default=False)] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object (the documented contract).")] = False,
    no_repro: Annotated[bool, typer.Option("--no-repro", help="Parse and match only; do not run the reproducer.")] = False,
    write_repro: Annotated[Optional[Path], typer.Option("--write-repro", metavar="DIR", help="Write a standalone reproducer script into DIR.")] = None,
    no_build_envs: Annotated[bool, typer.Option("--no-build-envs", help="Never build an environment with the report's library versions.")] = False,
) -> None:
    """Diagnose a training run whose loss is missing or wrong, from a traceback, code, logs or pip list."""
    if not files:
        if sys.stdin.isatty():
            _err("no input: give FILE arguments or '-' to read standard input (see diagnose --help)")
            raise typer.Exit(EXIT_USAGE)
        files = ["-"]
    try:
        code = _run_diagnose(files, json_output=json_output, reproduce=not no_repro, write_repro=write_repro, build_envs=not no_build_envs)
    except UnreadableInput as exc:
        _err(str(exc))
        code = EXIT_UNREADABLE
    except BotError as exc:
        _err(str(exc))
        code = EXIT_INTERNAL
    except KeyboardInterrupt:
        _err("interrupted")
        code = 130
    except Exception as exc:  # noqa: BLE001 - the edge: never show a stack trace to a user
        if os.environ.get("LOSSDOCTOR_DEBUG"):
            raise
        _err(f"internal error ({type(exc).__name__}): this is a lossdoctor bug; rerun with LOSSDOCTOR_DEBUG=1 and report it")
        code = EXIT_INTERNAL
    raise typer.Exit(code)


def _run_diagnose(files: list[str], *, json_output: bool, reproduce: bool, write_repro: Path | None, build_envs: bool) -> int:
    from bot.core import diagnose
    from bot.parse import parse_files
    from bot.settings import get_settings

    settings = get_settings()
    report = parse_files(read_inputs(files, settings.max_input_bytes))
    reproducer = None
    if reproduce or write_repro is not None:
        from reproducer.engine import Reproducer

        reproducer = Reproducer(
            settings=settings,
            progress=None if json_output else _progress,
            build_envs=build_envs and settings.build_envs,
            write_repro=write_repro,
            run=reproduce,
        )
    diagnosis = diagnose(report, reproduce=reproducer)
    if json_output:
        sys.stdout.write(diagnosis.model_dump_json() + "\n")
    else:
        _print_human(diagnosis)
    return EXIT_UNKNOWN if diagnosis.verdict == "unknown" else EXIT_OK


def _progress(message: str) -> None:
    sys.stderr.write(f"… {message}\n")
    sys.stderr.flush()


def _print_human(diagnosis) -> None:  # noqa: ANN001 - bot.models.Diagnosis
    header = f"verdict: {diagnosis.verdict}" + (f" · {diagnosis.failure_class}" if diagnosis.failure_class else "")
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.markdown import Markdown

        console = Console()
        console.print(f"[bold]{header}[/bold]")
        console.print(Markdown(diagnosis.reply))
    else:
        sys.stdout.write(header + "\n\n" + diagnosis.reply)


# ---- lossdoctor -------------------------------------------------------------------------


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


@app.command("eval")
def eval_cmd(
    path: Path,
    show_misses: Annotated[bool, typer.Option("--misses", help="List each wrong line.")] = False,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Score the matcher on a JSONL file of {user_text, failure_class} lines."""
    from knowledge.evaluate import evaluate, read_jsonl
    from knowledge.kb import default_kb

    try:
        rows = read_jsonl(path)
    except UnreadableInput as exc:
        typer.echo(f"lossdoctor: {exc}", err=True)
        raise typer.Exit(EXIT_UNREADABLE) from None
    result = evaluate(rows, default_kb())
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
                typer.echo(f"  line {number}: expected {expected}, got {predicted}")


def diagnose_main() -> None:
    diagnose_app(prog_name="diagnose")


def lossdoctor_main() -> None:
    app(prog_name="lossdoctor")
