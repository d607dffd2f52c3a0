"""Named, generated sections of a results file (benchmarks/RESULTS.md), each between its own markers.

Every benchmark script owns one section and rewrites only that one, so several scripts (the CPU grid,
the peers, training, communication, low precision) share one RESULTS.md without overwriting each other.
"""

from __future__ import annotations

import re
from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    """The BEGIN / END marker lines of section ``name``."""
    return (f"<!-- BEGIN sparsec section {name}: generated; edit outside these markers -->",
            f"<!-- END sparsec section {name} -->")


def write_section(path: str | Path, name: str, markdown: str) -> None:
    """Replace section ``name`` of the file at ``path`` by ``markdown`` (appended when absent)."""
    path = Path(path)
    begin, end = markers(name)
    block = f"{begin}\n\n{markdown.strip()}\n\n{end}"
    text = path.read_text() if path.exists() else "# sparsec benchmark results\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def read_section(path: str | Path, name: str) -> str | None:
    """The markdown of section ``name``, or None when the file or the section is absent."""
    path = Path(path)
    if not path.exists():
        return None
    begin, end = markers(name)
    m = re.search(re.escape(begin) + r"\n\n(.*?)\n\n" + re.escape(end), path.read_text(), re.S)
    return m.group(1) if m else None
