"""The `aim` command line: one thin function per subcommand (parse, call, print)."""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from typing import Any

import typer
from rich.markup import escape

from aim_cli import __version__

# Subcommands register themselves on `app` when imported.
from aim_cli.cli import calibrate as _calibrate  # noqa: F401
from aim_cli.cli import classify as _classify  # noqa: F401
from aim_cli.cli import eval as _eval  # noqa: F401
from aim_cli.cli import generate as _generate  # noqa: F401
from aim_cli.cli import report as _report  # noqa: F401
from aim_cli.cli import segment as _segment  # noqa: F401
from aim_cli.cli import serve as _serve  # noqa: F401
from aim_cli.cli import verify as _verify  # noqa: F401
from aim_cli.cli.common import app, err_console, printable
from aim_cli.errors import EXIT_USAGE, AimError, Interrupted
from aim_cli.interrupts import as_interrupt, install_handlers, raise_if_received

EXIT_INTERNAL = 3
DEBUG_FLAG = "--debug"


def _version(value: bool) -> None:
    """Print the version and stop."""
    if value:
        typer.echo(f"aim {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Offline AI model modulation: serve quality tiers and shift focus by redistributing logits.

    Global flag: --debug (anywhere on the line) shows full tracebacks.
    """


def _value_options(command: Any, args: list[str]) -> set[str]:
    """Option names that take a value, for the subcommand named in `args` (and the root)."""
    names: set[str] = set()
    commands = [command]
    sub = next((a for a in args if not a.startswith("-")), None)
    if sub is not None and hasattr(command, "commands") and sub in command.commands:
        commands.append(command.commands[sub])
    for cmd in commands:
        for param in getattr(cmd, "params", []):
            if getattr(param, "param_type_name", "") == "option" and not getattr(param, "is_flag", False):
                names.update(param.opts)
    return names


def split_debug(command: Any, args: list[str]) -> tuple[list[str], bool]:
    """Remove the global --debug flag, but not when it is another option's value or after `--`."""
    takes_value = _value_options(command, args)
    kept: list[str] = []
    debug = False
    after_separator = False
    for index, arg in enumerate(args):
        if arg == "--":
            after_separator = True
        previous = args[index - 1] if index else ""
        is_value = previous in takes_value and "=" not in previous
        if arg == DEBUG_FLAG and not after_separator and not is_value:
            debug = True
            continue
        kept.append(arg)
    return kept, debug


def _is_usage_error(exc: BaseException) -> bool:
    """A click-style usage error from whichever click raised it.

    typer 0.2x bundles its own copy of click, so `except click.ClickException` misses its
    errors: match by behaviour (a `show()` method and an integer `exit_code`) instead.
    """
    return callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int)


def _exit_request(exc: BaseException) -> int | None:
    """The code of a typer/click `Exit` (from either click), else None."""
    code = getattr(exc, "exit_code", None)
    return code if type(exc).__name__ == "Exit" and isinstance(code, int) else None


def _say(text: str) -> None:
    """One literal line on stderr, control characters (e.g. from a file name) escaped."""
    err_console.print(printable(text), highlight=False, markup=False, soft_wrap=True)


def show_warning(message: Warning | str, category: type[Warning], *_args: Any, **_kwargs: Any) -> None:
    """Print a Python warning (ours or a library's) as one aim line instead of file:line source."""
    text = " ".join(str(message).split())
    _say(f"aim: warning: {text}")


def _bare(command: Any) -> None:
    """A bare `aim`: the help, then exit 2, as click 8.2+ does (click 8.1 exits 0)."""
    try:
        command.main(args=["--help"], prog_name="aim", standalone_mode=False)
    except Exception as exc:
        if _exit_request(exc) is None:
            raise
    sys.exit(EXIT_USAGE)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, mapping user errors to one line and an exit code."""
    command = typer.main.get_command(app)
    args, debug = split_debug(command, list(sys.argv[1:] if argv is None else argv))
    debug = debug or os.environ.get("AIM_DEBUG") == "1"
    install_handlers()
    if not debug:
        warnings.showwarning = show_warning
    if not args:
        _bare(command)
    try:
        try:
            raise_if_received()
            code = command.main(args=args, prog_name="aim", standalone_mode=False)
        except BaseException as exc:
            # A signal is reported as one, whatever a library turned it into on the way up.
            interrupt = as_interrupt(exc)
            if interrupt is None or interrupt is exc:
                raise
            raise interrupt from None
    except Interrupted as exc:
        _say(
            f"aim: interrupted ({exc.name}); finished outputs are whole and no temporary files were left"
            " (rerun with --resume to continue a batch)"
        )
        sys.exit(exc.exit_code)
    except AimError as exc:
        if debug:
            traceback.print_exc()
        err_console.print(
            f"[bold red]aim: error:[/] {escape(printable(exc))}", highlight=False, markup=True, soft_wrap=True
        )
        sys.exit(exc.exit_code)
    except OSError as exc:  # the environment (disk full, permissions), not a bug in aim
        if debug:
            traceback.print_exc()
        where = f": {exc.filename}" if exc.filename else ""
        _say(f"aim: error: {exc.strerror or exc}{where}")
        sys.exit(EXIT_USAGE)
    except Exception as exc:
        requested = _exit_request(exc)
        if requested is not None:
            sys.exit(requested)
        if _is_usage_error(exc):
            usage: Any = exc  # either click's UsageError: matched by behaviour, not by class
            usage.show()  # click's usual "Usage: ... Error: ..." text
            sys.exit(usage.exit_code)
        if type(exc).__name__ == "Abort":
            _say("aim: aborted")
            sys.exit(1)
        if debug:  # a bug, not a user error: still one line unless --debug
            traceback.print_exc()
        else:
            _say(f"aim: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        sys.exit(EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)
