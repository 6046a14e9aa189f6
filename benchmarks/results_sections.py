"""Marker-delimited sections of a Markdown file, each owned by one generator.

    <!-- experiment:captions:start -->
    ... generated ...
    <!-- experiment:captions:end -->

``write_section`` replaces only its own section (or appends it), so the generators of one file
(the full benchmark, each experiment) never overwrite each other's tables, and rewriting a section
with the same body leaves the file byte-identical.
"""
from __future__ import annotations

import re
from pathlib import Path

_START = re.compile(r"<!-- experiment:([\w-]+):start -->")


def markers(name: str) -> tuple[str, str]:
    return f"<!-- experiment:{name}:start -->", f"<!-- experiment:{name}:end -->"


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the section ``name`` set to ``body`` (appended at the end if the file has none)."""
    start, end = markers(name)
    block = f"{start}\n{body.strip()}\n{end}"
    head, found, rest = text.partition(start)
    if found and end in rest:
        return head + block + rest.split(end, 1)[1]
    return (text.rstrip("\n") + "\n\n" if text.strip() else "") + block + "\n"


def read_sections(text: str) -> dict[str, str]:
    """Every complete section's body, by name, in file order."""
    sections = {}
    for match in _START.finditer(text):
        name = match.group(1)
        rest = text[match.end():]
        end = markers(name)[1]
        if end in rest:
            sections[name] = rest.split(end, 1)[0].strip()
    return sections


def keep_sections(old: str, new: str) -> str:
    """``new`` plus every section of ``old`` that ``new`` lacks (a generator that rewrites a whole file keeps the others)."""
    for name, body in read_sections(old).items():
        if markers(name)[0] not in new:
            new = replace_section(new, name, body)
    return new


def write_section(path: Path, name: str, body: str) -> None:
    """Replace (or add) the section ``name`` of the Markdown file ``path`` (created if missing)."""
    text = path.read_text() if path.is_file() else ""
    updated = replace_section(text, name, body)
    if updated != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(updated)
        tmp.replace(path)
