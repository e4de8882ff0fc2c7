"""Render the compatibility table of docs/compatibility.md from tests/compatibility_families.py.

python -m tests.render_compatibility           # print the table
python -m tests.render_compatibility --write   # replace it in docs/compatibility.md, between the markers
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.compatibility_families import FAMILIES, GENERATE, TASK_TITLES, Family

PAGE = Path(__file__).resolve().parents[1] / "docs" / "compatibility.md"
START, END = "<!-- compatibility:start -->", "<!-- compatibility:end -->"
REGENERATE = "python -m tests.render_compatibility --write"
# What the test runs for a family that works, per task.
CHECKED = {
    "classify": "`classify` (`--sigma`, `--focus`, `--compare`), `calibrate --target-acc`",
    "segment": "`segment` (`--sigma`, `--focus`, `--compare`, `--masks`), `calibrate --task segment --target-miou`",
    GENERATE: "`generate` (`--sigma`, `--focus`, `--compare`), "
    "`calibrate --task generate --target-acc` (multiple choice)",
}


def status(family: Family) -> str:
    """The table cell saying what aim does with a family."""
    text = "works" if family.works else f"not supported: {family.reason}"
    notes = []
    if family.install:
        notes.append(f"needs `pip install {family.install}`")
    if family.pending:
        notes.append(f"pending: {family.pending}")
    return f"{text} ({'; '.join(notes)})" if notes else text


def render() -> str:
    """The Markdown table, one section per task, in declaration order."""
    lines: list[str] = []
    for task, title in TASK_TITLES.items():
        rows = [family for family in FAMILIES if family.task == task]
        lines += [f"**{title}**: checked with {CHECKED[task]}", "", "| Family | Checkpoint | aim |", "|---|---|---|"]
        lines += [f"| {family.name} | {family.checkpoint} | {status(family)} |" for family in rows]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def page_table(text: str) -> str:
    """What the page holds between the markers (without them)."""
    if START not in text or END not in text:
        raise ValueError(f"{PAGE.name} lacks the {START} ... {END} markers")
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def with_table(text: str, table: str) -> str:
    """The page text with the table between the markers replaced."""
    head, rest = text.split(START, 1)
    return f"{head}{START}\n{table}{END}{rest.split(END, 1)[1]}"


def main(argv: list[str]) -> int:
    """Print the table, or write it into docs/compatibility.md with --write."""
    table = render()
    if argv == ["--write"]:
        PAGE.write_text(with_table(PAGE.read_text(encoding="utf-8"), table), encoding="utf-8")
        print(f"updated docs/{PAGE.name}")
    elif argv:
        print(__doc__, file=sys.stderr)
        return 2
    else:
        print(table, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
