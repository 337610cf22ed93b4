"""The table: a header saying what was run where, one line per row as it is measured, and a
footer with the legend, the notes and the target's verdict."""

from __future__ import annotations

import os
import platform
import shlex
from dataclasses import dataclass, field

from authbus_dev import infra

from .console import cores, cpu_model, load_average, progress
from .cpu import GROUPS
from .kinds import KINDS
from .load import Open
from .measure import Row
from .options import TARGET_KINDS, TARGET_P99_MS, Options

COLUMNS = (
    f"{'kind':<17}{'authz':>5}  {'load':<12}{'n':>6}{'p50 ms':>8}{'p99 ms':>9}{'max ms':>8}"
    f"{'verif/s':>9}{'authz ms':>9}{'split':>7}{'bad':>5}  "
    + "".join(f"{g:>6}" for g in GROUPS)
    + f"  {'target':<7} notes"
)
CPU_TITLE = f"{'':<97}{'cpu ms per request':^30}"
LATE_NOTE_MS = 1.0  # open rows: mention sends later than this behind schedule


def rates(values: tuple[float, ...]) -> str:
    return ", ".join(f"{v:g}" for v in values) + "/s"


@dataclass
class Report:
    """Prints rows as they come (stdout: the table only; progress goes to stderr)."""

    opts: Options
    argv: list[str]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def header(self) -> None:
        o = self.opts
        lines = [
            f"cold verification through Kafka (loopback, {cores()} cores)    target: p99 <= "
            f"{TARGET_P99_MS:g} ms ({', '.join(TARGET_KINDS)}) at moderate load (open rows)",
            f"command: {shlex.join(['.venv/bin/python', *self.argv])}",
            f"machine: {cores()} cores usable ({os.cpu_count()} online), {cpu_model()}; "
            f"{platform.system()} {platform.machine()}, Python {platform.python_version()}; "
            f"Kafka {infra.KAFKA_VERSION}, SecantusDB {infra.SECANTUS_VERSION}; "
            f"load average at start {load_average()}",
            f"each row: {o.warmup:g} s warm-up at the same load (thrown away), then "
            f"{o.seconds:g} s; producer linger {o.kafka('-').linger_ms} ms; broker warmed up "
            f"{o.broker_warmup:g} s first; authz record cache {'on' if o.record_cache else 'off'}",
            "load: closed:1 = closed loop, 1 in flight: unloaded latency;",
            f"      closed:{o.concurrency} = closed loop, {o.concurrency} in flight: saturation "
            "(throughput; its latency is mostly queueing);",
            f"      open:R/s = open loop, {o.arrivals} arrivals at R per second, timed from the "
            "scheduled send: moderate load, where the target is judged;",
            f"      R = {rates(o.rates)} for bearer, key and the baselines; "
            f"{rates(o.password_rates)} for the argon2 kinds ({', '.join(argon2_kinds())})",
            "",
            CPU_TITLE,
            COLUMNS,
        ]
        print("\n".join(lines), flush=True)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        p99 = f"{row.p99_ms:.2f}{'*' if row.n < 100 else ' '}"
        authz_ms = f"{row.authz_ms:.2f}" if row.authz_ms is not None else "-"
        cpu = "".join(f"{row.cpu_ms.get(g, 0.0):>6.2f}" for g in GROUPS)
        print(
            f"{row.kind:<17}{row.authz:>5}  {row.load.label:<12}{row.n:>6}{row.p50_ms:>8.2f}"
            f"{p99:>9}{row.max_ms:>8.2f}{row.rate:>9.1f}{authz_ms:>9}{row.split:>7}"
            f"{row.bad:>5}  {cpu}  {verdict(row):<7} {row_notes(row)}".rstrip(),
            flush=True,
        )

    def note(self, text: str) -> None:
        self.notes.append(text)
        progress(text)

    def footer(self, took_s: float) -> None:
        lines = ["", *legend(self.rows), *target_summary(self.rows)]
        lines += [f"note: {text}" for text in self.notes]
        lines.append(
            f"run took {took_s:.0f} s (start-up and stops included); "
            f"load average at end {load_average()}."
        )
        print("\n".join(lines), flush=True)


def argon2_kinds() -> list[str]:
    return [name for name, kind in KINDS.items() if kind.argon2]


def judged(row: Row) -> bool:
    """The target is judged on the open-loop rows of bearer and key."""
    return row.kind in TARGET_KINDS and isinstance(row.load, Open)


def meets(row: Row) -> bool:
    return row.p99_ms <= TARGET_P99_MS and row.bad == 0 and row.behind is None


def verdict(row: Row) -> str:
    if not judged(row):
        return "-"
    return "met" if meets(row) else "MISSED"


def row_notes(row: Row) -> str:
    notes = [row.behind] if row.behind else []
    if row.late_p99_ms > LATE_NOTE_MS:
        notes.append(f"sends late p99 {row.late_p99_ms:.1f} ms")
    return "; ".join(notes)


def legend(rows: list[Row]) -> list[str]:
    lines = []
    if any(r.n < 100 for r in rows):
        lines.append("p99*: fewer than 100 samples in that row; p99 is then the maximum.")
    lines += [
        "verif/s: completed per second: closed rows, the throughput; open rows, the achieved "
        "rate. BEHIND: under 95%",
        "  of the offered rate, or the requests in flight grew (mean at a send, first quarter "
        "-> last quarter).",
        "authz ms: mean time authz spent checking one credential (authz_verify_duration_seconds);",
        "  round trip ~ base:group (request leg) + authz ms + base:kafka (reply leg).",
        "base:group: a hop read by the project's GroupConsumer, as authz reads its requests;",
        "  base:kafka: a hop read by an assigned consumer, as the asker reads its replies.",
        "split: the share of checks each authz instance answered (%).",
        "cpu ms per request: CPU used in the stretch / requests; kafka = broker, mongo = "
        "SecantusDB,",
        "  authz = all instances, bench = this asker, other = the rest of the machine "
        "(should be ~0).",
    ]
    if any(r.kind == "base:kafka0" for r in rows):
        lines.append("base:kafka0: the same Kafka hop with linger_ms=0 (what linger costs).")
    return lines


def target_summary(rows: list[Row]) -> list[str]:
    """Per kind and authz count, which open-loop rates meet the target; then over all."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in filter(judged, rows):
        groups.setdefault((row.kind, row.authz), []).append(row)
    if not groups:
        return ["target: not judged (no open-loop rows of bearer or key)."]
    lines = [
        f"target: p99 <= {TARGET_P99_MS:g} ms for {' and '.join(TARGET_KINDS)} at moderate "
        "load (open rows; no bad replies, keeping up):"
    ]
    for (kind, authz), group in groups.items():
        cells = [f"{_rate(r):g}/s {verdict(r)} (p99 {r.p99_ms:.2f} ms)" for r in group]
        lines.append(f"  {kind:<7}{authz} authz: {', '.join(cells)}")
    judged_rows = [r for g in groups.values() for r in g]
    missed = {_rate(r) for r in judged_rows if not meets(r)}
    met = {_rate(r) for r in judged_rows} - missed
    if not missed:
        lines.append(f"  met at every rate measured ({rates(tuple(sorted(met)))}).")
    else:
        everywhere = rates(tuple(sorted(met))) if met else "none"
        lines.append(
            f"  met in every row at: {everywhere}; missed in some row at: "
            f"{rates(tuple(sorted(missed)))}."
        )
    return lines


def _rate(row: Row) -> float:
    return row.load.rate if isinstance(row.load, Open) else 0.0
