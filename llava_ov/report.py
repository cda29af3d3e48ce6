"""Plain-text and markdown tables: the one renderer of the trainer's held-out table, the comparison's
tables and the probe's results table. Depends on nothing of the project, so any module may use it."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    markdown: bool = False,
    *,
    align: str | None = None,
    min_widths: Sequence[int] | None = None,
    sep: str = "  ",
    rule: bool = True,
) -> str:
    """The header line, then one line per row (cells already formatted as strings).

    ``markdown``: ``| a | b |`` lines under a ``| --- | --- |`` rule (``align``, ``min_widths``, ``sep``
    and ``rule`` unused). Plain text: each column as wide as its widest cell (header included, at
    least ``min_widths[i]``), cells padded by ``align`` (one ``l`` / ``r`` per column, default all
    ``l``) and joined by ``sep``; with ``rule`` a line of dashes under the header. A row may have fewer
    cells than the header (a totals line): its missing cells are left out, not padded.
    """
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    align = align or "l" * len(header)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align must be one 'l' or 'r' per column, got {align!r}")
    floor = list(min_widths) if min_widths is not None else [0] * len(header)
    widths = [
        max(floor[i], len(h), *(len(row[i]) for row in rows if i < len(row))) for i, h in enumerate(header)
    ]

    def line(cells: Sequence[str]) -> str:
        return sep.join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align))

    lines = [line(header)] + ([sep.join("-" * w for w in widths)] if rule else [])
    return "\n".join(lines + [line(row) for row in rows])


__all__ = ["format_table"]
