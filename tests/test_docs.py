"""The README, the benchmark write-ups and the code point readers at sections of benchmarks/RESULTS.md and
benchmarks/HISTORY.md by name; every such name must be a bold section heading there."""

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"RESULTS": ROOT / "benchmarks" / "RESULTS.md", "HISTORY": ROOT / "benchmarks" / "HISTORY.md"}
# "Name" in `benchmarks/RESULTS.md`, 'Name' in benchmarks/HISTORY.md, (`RESULTS.md`, "Name"), ...
PATTERNS = [
    re.compile(r"[\"'](?P<name>[A-Z][^\"'\n]{2,80})[\"'] in `?(?:benchmarks/)?(?P<doc>RESULTS|HISTORY)\.md"),
    re.compile(r"\(`?(?:benchmarks/)?(?P<doc>RESULTS|HISTORY)\.md`?, \"(?P<name>[^\"]+)\""),
]


@cache
def _flat(path: Path) -> str:
    """The file's text with every run of whitespace as one space (a name may wrap across lines)."""
    return re.sub(r"\s+", " ", path.read_text())


def _sources() -> list[Path]:
    files = [ROOT / "README.md", *TARGETS.values()]
    for package in ("app", "benchmarks", "dataengine", "encoders", "judge", "separation"):
        files += sorted((ROOT / package).rglob("*.py"))
    return files


@cache
def section_references() -> list[tuple[str, str, str]]:
    """(file, document, section name) for every reference found."""
    found = []
    for path in _sources():
        text = _flat(path)
        for pattern in PATTERNS:
            found += [(path.name, m["doc"], m["name"]) for m in pattern.finditer(text)]
    return found


def test_references_are_found():
    documents = {doc for _, doc, _ in section_references()}
    assert documents == {"RESULTS", "HISTORY"}, documents


@pytest.mark.parametrize("source,doc,name", sorted(set(section_references())))
def test_referenced_section_exists(source, doc, name):
    assert f"**{name}" in _flat(TARGETS[doc]), f"{source} names a section {name!r} that {doc}.md lacks"
