"""The run's table (Markdown, so the README can quote it as printed) and the details under it."""

from __future__ import annotations

from .harness import Result

COLUMNS = (
    "fault",
    "published",
    "acknowledged",
    "indeterminate (stored)",
    "stored",
    "lost",
    "duplicated",
    "dead-lettered",
    "time to recover (s)",
    "verdict",
)


def _recover(result: Result) -> str:
    if not result.recoveries:
        return "-"
    worst = result.recover_seconds()
    if worst is None:
        return "did not"
    if len(result.recoveries) == 1:
        return f"{worst:.1f}"
    return f"{worst:.1f} (max of {len(result.recoveries)})"


def row(result: Result) -> list[str]:
    if result.not_possible is not None:
        return [result.scenario, *["-"] * (len(COLUMNS) - 2), result.not_possible]
    v = result.verdict
    verdict = "ok" if result.ok else "FAILED: " + ", ".join(result.failures())
    if v is None:
        return [result.scenario, *["-"] * (len(COLUMNS) - 2), verdict]
    duplicated = len(v.duplicated) + len(v.duplicated_records)
    return [
        result.scenario,
        f"{v.published:,}",
        f"{v.acknowledged:,}",
        f"{v.indeterminate:,} ({v.indeterminate_stored:,})",
        f"{v.stored:,}",
        f"{len(v.lost):,}",
        f"{duplicated:,}",
        f"{sum(v.dead_lettered.values()):,}",
        _recover(result),
        verdict,
    ]


def table(results: list[Result]) -> str:
    rows = [list(COLUMNS), *(row(r) for r in results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i in (0, len(cells) - 1) else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(rows[0]), rule, *(line(r) for r in rows[1:])])


def details(result: Result) -> str:
    out = [f"{result.scenario} (seed {result.seed}, {result.seconds:.0f} s):"]
    if result.not_possible is not None:
        out.append(f"  {result.not_possible}")
    for label, seconds in result.recoveries:
        out.append(
            f"  recovered from {label}: "
            + (f"{seconds:.1f} s" if seconds is not None else "not within the run")
        )
    out += [f"  {note}" for note in result.notes]
    v = result.verdict
    if v is not None:
        out.append(
            f"  Kafka holds {v.in_kafka:,} records ({v.kafka_copies:,} extra copies of an id); "
            f"{v.indeterminate:,} sends not acknowledged, {v.indeterminate_stored:,} of them stored"
        )
        out += [f"  PROBLEM: {p}" for p in v.problems()]
    out += [f"  PROBLEM: {p}" for p in result.problems]
    return "\n".join(out)
