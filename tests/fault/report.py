"""The records of a trial as the issue's closing note wants them: per phase (before, during,
after the fault) and kind of request, the answers by status and the worst latency; and a strip
per kind, one character a second, of the status classes over time.

Strip characters: `.` every answer 2xx, `4` some 4xx (no 5xx), `5` some 5xx, `x` some request
got no answer at all (timeout, refused), ` ` nothing sent that second.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tests.fault.load import Record

Folders = tuple[Path, ...]  # where reports go
KINDS = ("cached", "uncached", "revoked", "create", "revoke")


def phase_at(marks: list[tuple[str, float]], at_s: float) -> str:
    """The phase a moment falls in: the last mark at or before it."""
    return [name for name, start in marks if start <= at_s][-1]


def select(
    records: Iterable[Record],
    marks: list[tuple[str, float]],
    phase: str | None = None,
    kind: str | None = None,
) -> list[Record]:
    """The records sent during `phase` (None: any) of `kind` (None: any)."""
    return [
        r
        for r in records
        if (phase is None or phase_at(marks, r.sent_s) == phase) and kind in (None, r.kind)
    ]


def statuses(records: Iterable[Record]) -> Counter[int]:
    return Counter(r.status for r in records)


def worst(records: Iterable[Record]) -> float:
    return max((r.latency_s for r in records), default=0.0)


def _quantile(records: list[Record], q: float) -> float:
    ordered = sorted(r.latency_s for r in records)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0


def _kinds(records: list[Record]) -> list[str]:
    seen = {r.kind for r in records}
    return [k for k in KINDS if k in seen] + sorted(seen - set(KINDS))


def table(records: list[Record], marks: list[tuple[str, float]]) -> str:
    codes = sorted({r.status for r in records})
    header = ["phase", "kind", "n", *[str(c) if c else "none" for c in codes], "p50 s", "worst s"]
    rows = [header]
    for phase in dict.fromkeys(name for name, _ in marks):
        for kind in _kinds(records):
            chosen = select(records, marks, phase, kind)
            if not chosen:
                continue
            counted = statuses(chosen)
            rows.append(
                [
                    phase,
                    kind,
                    str(len(chosen)),
                    *[str(counted[c]) if counted[c] else "" for c in codes],
                    f"{_quantile(chosen, 0.5):.3f}",
                    f"{worst(chosen):.3f}",
                ]
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def _cell(chosen: list[Record]) -> str:
    if not chosen:
        return " "
    if any(r.status == 0 for r in chosen):
        return "x"
    if any(r.status >= 500 for r in chosen):
        return "5"
    return "4" if any(r.status >= 400 for r in chosen) else "."


def strips(records: list[Record], marks: list[tuple[str, float]]) -> str:
    """One line per kind: the status classes of the requests sent in each second."""
    seconds = math.ceil(max((r.sent_s for r in records), default=0.0)) + 1
    ruler = [" "] * seconds
    for _, start in marks:
        ruler[min(int(start), seconds - 1)] = "|"
    lines = [
        f"{'marks':>9} "
        + "".join(ruler)
        + "  (| starts: "
        + ", ".join(f"{name} {start:.1f} s" for name, start in marks)
        + ")"
    ]
    for kind in _kinds(records):
        mine = [r for r in records if r.kind == kind]
        cells = [_cell([r for r in mine if int(r.sent_s) == s]) for s in range(seconds)]
        lines.append(f"{kind:>9} " + "".join(cells))
    return "\n".join(lines)


def failed_by_instance(records: list[Record]) -> list[str]:
    """Per kind, the answers that were neither 2xx nor 4xx, by api instance."""
    lines = []
    for kind in _kinds(records):
        bad = Counter(
            f"api-{r.api} {r.status or 'none'}"
            for r in records
            if r.kind == kind and not 200 <= r.status < 500
        )
        if bad:
            lines.append(f"{kind} not answered 2xx/4xx, by instance: {dict(sorted(bad.items()))}")
    return lines


def unanswered(records: list[Record], most: int = 8) -> list[str]:
    """The requests that got no answer at all: what happened to them (the first `most`)."""
    silent = [r for r in records if r.status == 0]
    lines = [
        f"no answer: {r.kind} to api-{r.api} sent at {r.sent_s:.2f} s, after {r.latency_s:.2f} s:"
        f" {r.note}"
        for r in silent[:most]
    ]
    return lines + ([f"... and {len(silent) - most} more"] if len(silent) > most else [])


def publish(
    folders: Folders,
    name: str,
    title: str,
    records: list[Record],
    marks: list[tuple[str, float]],
    notes: Iterable[str] = (),
) -> str:
    """The report, printed (pytest -s shows it) and written to `<folder>/<name>.txt`."""
    parts = [f"== {title}", table(records, marks), "", strips(records, marks)]
    text = "\n".join([*parts, *notes, *failed_by_instance(records), *unanswered(records), ""])
    paths = [folder / f"{name}.txt" for folder in folders]
    for path in paths:
        path.write_text(text)
    print(f"\n{text}(written to {', '.join(map(str, paths))})")  # for a human: pytest -s
    return text
