"""The table: one line per row and order, then authbus cached against each peer (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .load import Loaded

COLUMNS = (("req/s", 9), ("p50 ms", 8), ("p99 ms", 8), ("RSS MiB", 8), ("non-200", 8))
ROW_WIDTH = 33
ORDER_WIDTH = 8


@dataclass(frozen=True)
class Result:
    row: str
    order: str  # "forward" or "reverse"
    loaded: Loaded | None = None  # None: the row failed before its load
    rss_mib: float = 0.0  # peak resident set of the server process(es) under test
    notes: Sequence[str] = ()
    problems: Sequence[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.problems) or self.loaded is None or self.loaded.not_ok > 0


def _number(value: float, digits: int) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def line(result: Result) -> str:
    head = f"{result.row:<{ROW_WIDTH}}{result.order:<{ORDER_WIDTH}}"
    loaded = result.loaded
    if loaded is None:
        return head + "FAILED: " + "; ".join(result.problems)
    values = (
        _number(loaded.rps, 0),
        _number(loaded.p50_ms, 2),
        _number(loaded.p99_ms, 2),
        _number(result.rss_mib, 0),
        str(loaded.not_ok),
    )
    cells = "".join(f"{v:>{w}}" for v, (_, w) in zip(values, COLUMNS, strict=True))
    said = list(result.notes) + [f"FAILED: {p}" for p in result.problems]
    if loaded.not_ok:
        said.append(f"FAILED: {loaded.not_ok} answers not 200 {dict(loaded.statuses)}")
    return f"{head}{cells}  {', '.join(said)}".rstrip()


def table(results: Sequence[Result]) -> str:
    header = f"{'row':<{ROW_WIDTH}}{'order':<{ORDER_WIDTH}}"
    header += "".join(f"{name:>{w}}" for name, w in COLUMNS) + "  checks"
    return "\n".join([header, *(line(r) for r in results)])


def ratio(mine: float, theirs: float) -> str:
    if theirs == 0 or math.isnan(mine) or math.isnan(theirs):
        return "-"
    return f"{mine / theirs:.2f}"


def ratios(results: Sequence[Result], base: str, orders: Sequence[str]) -> str:
    """`base`'s req/s and p99 over each other row's, per order (req/s above 1 and p99 below 1
    favour `base`)."""
    found = {(r.row, r.order): r.loaded for r in results}
    peers = list(dict.fromkeys(r.row for r in results if r.row != base))
    label = f"{base} / peer"
    head = f"{label:<{ROW_WIDTH + ORDER_WIDTH}}"
    lines = [head + "".join(f"{'req/s ' + o:>16}{'p99 ' + o:>16}" for o in orders)]
    for peer in peers:
        cells = ""
        for order in orders:
            mine, theirs = found.get((base, order)), found.get((peer, order))
            if mine is None or theirs is None:
                cells += f"{'-':>16}{'-':>16}"
                continue
            cells += f"{ratio(mine.rps, theirs.rps):>16}{ratio(mine.p99_ms, theirs.p99_ms):>16}"
        lines.append(f"{peer:<{ROW_WIDTH + ORDER_WIDTH}}{cells}")
    return "\n".join(lines)
