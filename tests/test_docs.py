"""The README is the front door and docs/ the site: cheap checks, no mkdocs build.

README.md stays short and starts with the two commands; every relative link of README.md and
docs/*.md reaches a file (and a heading, when it names one); every page is in mkdocs.yml's nav;
the API reference lists exactly the public names. `make docs` (mkdocs build --strict) checks
the rest.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
README_LIMIT = 12_000
FIRST_BLOCK = "```bash\nmake demo\nmake test\n```"

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", flags=re.DOTALL | re.MULTILINE)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", flags=re.MULTILINE)


def prose(text: str) -> str:
    """Markdown without code blocks and inline code, where link-like text is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def links(text: str) -> list[str]:
    """Every relative link or image target of a Markdown text (no URLs, no mail)."""
    return [target for target in LINK.findall(prose(text)) if not re.match(r"[a-z][a-z0-9+.-]*:", target, re.I)]


def anchors(path: Path) -> set[str]:
    """The heading ids of a page, as MkDocs (toc) and GitHub spell them."""
    ids = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        text = heading.replace("`", "")
        ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
        ids.add(re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", ascii_text).strip().lower()))  # MkDocs
        ids.add(re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-"))  # GitHub
    return ids


def test_readme_is_the_front_door():
    text = README.read_text(encoding="utf-8")
    assert len(text) < README_LIMIT, f"README.md is {len(text)} characters; move detail into docs/"
    first = re.search(r"^```.*?^```", text, flags=re.DOTALL | re.MULTILINE)
    assert first is not None and first.group(0) == FIRST_BLOCK, "README.md's first code block must be the two commands"
    assert "make demo" not in text[: first.start()], "the two commands come first"


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda path: str(path.relative_to(REPO)))
def test_every_relative_link_resolves(path):
    broken = []
    for target in links(path.read_text(encoding="utf-8")):
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.is_file():
            broken.append(f"{target} (no such file)")
        elif path.parent == DOCS and DOCS.resolve() not in destination.parents:
            broken.append(f"{target} (outside docs/: the site cannot link it)")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target} (no heading #{anchor})")
    assert not broken, f"{path.relative_to(REPO)}: " + "; ".join(broken)


def test_links_are_found():
    """The link checker sees links at all (a regex that matched nothing would pass everything)."""
    assert "docs/api.md" in links(README.read_text(encoding="utf-8"))
    assert "images/segment_focus_before_after.png" in links((DOCS / "segment.md").read_text(encoding="utf-8"))
    assert links("see `[not](a-link.md)` and\n```\n[nor](this.md)\n```\n[yes](b.md#x)") == ["b.md#x"]


def nav_files(entries) -> list[str]:
    """Every page file named in an mkdocs nav, depth first."""
    files = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        files += nav_files(value) if isinstance(value, list) else [value]
    return files


def test_every_page_is_in_the_nav():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = nav_files(config["nav"])
    assert sorted(nav) == sorted(path.name for path in PAGES), "mkdocs.yml's nav and docs/*.md differ"
    assert len(nav) == len(set(nav))


def test_api_reference_lists_the_public_names():
    import aim_cli

    text = (DOCS / "reference.md").read_text(encoding="utf-8")
    listed = re.findall(r"^::: aim_cli\.api\.(\w+)\s*$", text, flags=re.MULTILINE)
    assert sorted(listed) == sorted(aim_cli.__all__), "docs/reference.md and aim_cli.__all__ differ"
    assert len(listed) == len(set(listed))


def test_security_model_page_keeps_its_heading():
    assert (DOCS / "security.md").read_text(encoding="utf-8").startswith("# Security model\n")
