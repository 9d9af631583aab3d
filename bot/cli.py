"""``diagnose``: the user's command (the operator's ``lossdoctor`` is in `bot.lossdoctor_cli`).

Exit codes of ``diagnose``:

    0  diagnosed (verdict matched, reproduced or verified)
    1  internal error (a bug: the message says so, no traceback unless LOSSDOCTOR_DEBUG=1)
    2  usage error (bad option, no input given)
    3  unknown: lossdoctor abstained (nothing fits, or not a loss problem)
    4  unreadable input (missing file, empty, binary, too large)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import BotError, UnreadableInput

if TYPE_CHECKING:
    import argparse

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_UNKNOWN, EXIT_UNREADABLE = 0, 1, 2, 3, 4



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


def diagnose_parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog="diagnose",
        description="Diagnose a training run whose loss is missing or wrong, from a traceback, code, logs or pip list.",
        epilog="Exit codes: 0 diagnosed, 1 internal error, 2 usage error, 3 unknown (abstained), 4 unreadable input.",
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="files to read; '-' reads standard input")
    parser.add_argument("--json", dest="json_output", action="store_true", help="print one JSON object (the documented contract)")
    parser.add_argument("--no-repro", action="store_true", help="parse and match only; do not run the reproducer")
    parser.add_argument("--write-repro", type=Path, metavar="DIR", help="write a standalone reproducer script into DIR")
    parser.add_argument("--no-build-envs", action="store_true", help="never build an environment with the report's library versions")
    return parser


def diagnose_main(argv: list[str] | None = None) -> None:
    """Entry point of ``diagnose``. argparse, not typer: this path must start fast (see bench/)."""
    args = diagnose_parser().parse_args(argv)
    _fast_start()
    files = args.files
    if not files:
        if sys.stdin.isatty():
            _err("no input: give FILE arguments or '-' to read standard input (see diagnose --help)")
            sys.exit(EXIT_USAGE)
        files = ["-"]
    try:
        code = _run_diagnose(
            files, json_output=args.json_output, reproduce=not args.no_repro,
            write_repro=args.write_repro, build_envs=not args.no_build_envs,
        )
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
    sys.exit(code)


def _fast_start() -> None:
    """Cut the cold start of ``diagnose`` (see bench/): run before pydantic or our parser is imported."""
    # pydantic scans every installed distribution for plugins on first use (~30 ms); lossdoctor uses none
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    if os.environ["PYDANTIC_DISABLE_PLUGINS"] in ("__all__", "1", "true") and "pydantic" not in sys.modules:
        # With plugins disabled pydantic's loader returns no plugin, but importing it imports
        # importlib.metadata (~22 ms). Stand in for it with exactly that answer.
        import types

        loader = types.ModuleType("pydantic.plugin._loader")
        loader.__doc__ = "lossdoctor stand-in: PYDANTIC_DISABLE_PLUGINS is set, so there are no plugins"
        loader.PYDANTIC_ENTRY_POINT_GROUP = "pydantic"
        loader.get_plugins = lambda: ()
        sys.modules.setdefault("pydantic.plugin._loader", loader)
    from bot import regex_snapshot

    regex_snapshot.seed(regex_snapshot.default_cache_dir())


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
    from bot import regex_snapshot
    from bot.storage import cache_dir
    from knowledge import kb

    if not kb.snapshot_rebuilt:  # validating YAML compiles every entry's regexes once: not the usual run's
        regex_snapshot.save(cache_dir(settings))
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
