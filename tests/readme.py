"""README.rst as the tests read it: its literal blocks, the commands users copy."""

from __future__ import annotations

import textwrap

from tests.support import ROOT

README = ROOT / "README.rst"


def literal_blocks(text: str | None = None) -> list[str]:
    """Every ``::`` literal block of README.rst, dedented, without trailing blank lines.

    A block is the indented run of lines after a paragraph ending in ``::``
    and a blank line, as docutils reads it (directives such as
    ``.. code-block::`` are not used in README.rst).
    """
    lines = (README.read_text(encoding="utf-8") if text is None else text).split("\n")
    blocks: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].rstrip().endswith("::") and not lines[i].lstrip().startswith(".."):
            i += 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            body: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                body.append(lines[i])
                i += 1
            while body and not body[-1].strip():
                body.pop()
            blocks.append(textwrap.dedent("\n".join(body)))
        else:
            i += 1
    return blocks


def command(prefix: str) -> str:
    """README's one literal block (a command) that starts with ``prefix``."""
    found = [block for block in literal_blocks() if block.startswith(prefix)]
    assert len(found) == 1, f"README.rst has {len(found)} blocks starting with {prefix!r}"
    return found[0]
