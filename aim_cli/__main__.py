"""Allow `python -m aim_cli`."""

from aim_cli.entry import main

main()
