"""Allow `python -m aim_cli`."""

from aim_cli.cli import main

main()
