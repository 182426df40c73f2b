"""Plain-text tables for the CLI's listings: columns padded to their widest cell, two spaces apart."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["print_table", "table_lines"]


def table_lines(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    """The header and rows, one line each, trailing spaces removed."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]


def print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    print("\n".join(table_lines(header, rows)))
