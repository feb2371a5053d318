"""Reading the README and the docs pages as the tests that run their commands need them:
sections by heading, fenced blocks by language, shell commands, and each shell block with the
marker line above it (the convention is in tests/test_docs.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The URL the pages' commands use; tests replace it with their own server's.
PAGE_URL = "http://127.0.0.1:8000"
#: ``<!-- run by tests/FILE.py::TEST -->`` or ``<!-- not run here: needs WHAT -->``
MARKER = re.compile(
    r"<!-- (?:run by (?P<file>tests/[\w/]+\.py)::(?P<test>\w+)"
    r"|not run here: (?P<needs>needs \S.*?)) -->"
)


def pages() -> list[Path]:
    """The README and every page of the docs site."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def read(page: str) -> str:
    """A page by its path from the repository root, e.g. ``docs/footage.md``."""
    return (ROOT / page).read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The lines from ``heading`` to the next heading of the same or a higher level (lines
    in code blocks are no headings: a shell comment starts with ``#`` too)."""
    level = len(heading.split(" ")[0])
    lines = text.splitlines(keepends=True)
    start = lines.index(heading + "\n")
    fenced = False
    for end in range(start + 1, len(lines)):
        line = lines[end]
        if line.startswith("```"):
            fenced = not fenced
        found = re.match(r"(#+) ", line)
        if not fenced and found and len(found.group(1)) <= level:
            return "".join(lines[start:end])
    return "".join(lines[start:])


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def commands(block: str) -> list[str]:
    """Shell commands of a block: comments dropped, continued lines joined."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")
    ]


@dataclass(frozen=True)
class ShellBlock:
    page: str  # path from the repository root
    line: int  # of the opening fence, from 1
    text: str
    marker: str  # the line above the fence

    def run_by(self) -> tuple[str, str] | None:
        """(test file, test name) when the marker names the test that runs the block."""
        found = MARKER.fullmatch(self.marker)
        return (found["file"], found["test"]) if found and found["file"] else None

    def needs(self) -> str | None:
        """What the block needs that the suite's machine lacks, when the marker says so."""
        found = MARKER.fullmatch(self.marker)
        return found["needs"] if found else None


def shell_blocks(path: Path) -> list[ShellBlock]:
    """Every ```sh block of a page, with the line just above its fence."""
    lines = path.read_text(encoding="utf-8").splitlines()
    page = path.relative_to(ROOT).as_posix()
    found = []
    fenced = False
    for number, line in enumerate(lines):
        if not line.startswith("```"):
            continue
        if not fenced and line.strip() == "```sh":
            end = next(i for i in range(number + 1, len(lines)) if lines[i].startswith("```"))
            above = lines[number - 1].strip() if number else ""
            found.append(ShellBlock(page, number + 1, "\n".join(lines[number + 1 : end]), above))
        fenced = not fenced
    return found
