"""The `aim` command line: one thin function per subcommand (parse, call, print)."""

from __future__ import annotations

import os
import sys
import traceback

import click
import typer
from rich.markup import escape

from aim_cli import __version__
from aim_cli.cli.common import app, err_console
from aim_cli.errors import EXIT_USAGE, AimError

# Subcommands register themselves on `app` when imported.
from aim_cli.cli import calibrate as _calibrate  # noqa: E402,F401
from aim_cli.cli import classify as _classify  # noqa: E402,F401
from aim_cli.cli import generate as _generate  # noqa: E402,F401
from aim_cli.cli import segment as _segment  # noqa: E402,F401

EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


def _version(value: bool) -> None:
    """Print the version and stop."""
    if value:
        typer.echo(f"aim {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """Offline AI model modulation: serve quality tiers and shift focus by redistributing logits.

    Global flag: --debug (anywhere on the line) shows full tracebacks.
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, mapping user errors to one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("AIM_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="aim", standalone_mode=False)
    except AimError as exc:
        if debug:
            traceback.print_exc()
        err_console.print(f"[bold red]aim: error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except (click.exceptions.Abort, KeyboardInterrupt):
        err_console.print("aim: interrupted; no partial output was left behind", highlight=False)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # a bug, not a user error: still one line unless --debug
        if debug:
            traceback.print_exc()
        else:
            err_console.print(
                f"aim: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        sys.exit(EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)
