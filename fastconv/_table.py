"""The one table renderer: ``fastconv bench`` prints its results with it as aligned text, and
``bench/make_table.py`` the README's Markdown tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# (title, align): "<" left (names), ">" right (numbers)
Columns = Sequence[tuple[str, str]]


def render(columns: Columns, rows: Iterable[Sequence[str]], markdown: bool = False) -> str:
    """rows under columns' titles: Markdown (numbers right-aligned) or aligned plain text."""
    rows = [list(r) for r in rows]
    for r in rows:
        if len(r) != len(columns):
            raise ValueError(f"a row of {len(r)} cells for {len(columns)} columns: {r}")
    if markdown:
        lines = ["| " + " | ".join(t for t, _ in columns) + " |",
                 "|" + "|".join("---:" if a == ">" else "---" for _, a in columns) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max([len(t)] + [len(r[i]) for r in rows]) for i, (t, _) in enumerate(columns)]
    lines = [[t for t, _ in columns]] + rows
    return "\n".join(" ".join(f"{cell:{a}{w}}" for cell, (_, a), w in zip(line, columns, widths)).rstrip()
                     for line in lines)
