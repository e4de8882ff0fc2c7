"""The `aim` executable: signal handlers first, then the command line (which imports the heavy parts)."""

from __future__ import annotations

import sys

from aim_cli import interrupts
from aim_cli.errors import EXIT_SIGINT, EXIT_SIGTERM


def main(argv: list[str] | None = None) -> None:
    """Install the interrupt handlers, import the CLI, run it; a signal at any point exits 130/143."""
    interrupts.install_handlers()
    started = False
    try:
        from aim_cli.cli import main as run_cli

        interrupts.raise_if_received()  # an import may have swallowed it
        started = True
        run_cli(argv)
    except BaseException as exc:  # only an interrupt is handled here; anything else goes on as it was
        interrupt = interrupts.as_interrupt(exc)
        if interrupt is None or (isinstance(exc, SystemExit) and exc.code in (EXIT_SIGINT, EXIT_SIGTERM)):
            raise  # no signal, or the CLI already reported it
        where = "" if started else " while starting; nothing was written"
        sys.stderr.write(f"aim: interrupted ({interrupt.name}){where}\n")
        sys.exit(interrupt.exit_code)
    finally:
        interrupts.exit_on_signal()
