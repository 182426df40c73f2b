"""Sliding windows over stored rows, evaluated exactly; the alert key of a window.

A detector looks at one room's rows of one *subject* (a user, a text hash, a sender and recipient, ...)
in event time. A window is every row with `start <= occurred_at < start + T`, for a `start` that is the
time of one of the subject's rows; rows are ordered by (occurred_at, event_id), a function of the events
alone. A window *fires* when the detector's measure over its rows reaches the threshold; every measure here
is monotone (more rows never make a window stop firing).

The alert of a firing window is keyed by (subject, bucket), bucket = the start of the fixed T-second bucket
(counted from the Unix epoch, UTC) holding the window's start. So the set of keys is a function of the
stored rows: F(rows) = {(subject, bucket(start)) : the window at start fires}. Evaluating, after each
batch, every window that contains one of the batch's new rows finds exactly F(all rows) in the end, in any
order, batching or duplication:
- nothing more: a window firing over some rows fires over all of them (monotone), so each key found is
  in F(all rows);
- nothing less: a window of F(all rows) is evaluated by the batch that stored the last of its rows (it
  contains that row), over all its rows (they are stored by then, in the same transaction or before).
Within a bucket, the first firing start evaluated gives the alert's window and evidence (the key is kept,
the row is never rewritten).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

__all__ = ["Fired", "Row", "bucket_of", "firing_windows"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
R = TypeVar("R", bound="Row")
M = TypeVar("M")


class Row:
    """What the windows need of a stored row; detectors' rows carry more (`Stored`)."""

    __slots__ = ("event_id", "occurred_at")

    def __init__(self, occurred_at: datetime, event_id: uuid.UUID) -> None:
        self.occurred_at = occurred_at
        self.event_id = event_id


@dataclass(frozen=True, slots=True)
class Fired(Generic[R, M]):
    """A window that fired: its bucket (the alert's window_key), start and end, rows, and the measure."""

    bucket: datetime
    start: datetime
    end: datetime
    rows: tuple[R, ...]
    measure: M


def bucket_of(at: datetime, window_seconds: int) -> datetime:
    """The start of the `window_seconds` bucket (counted from the Unix epoch, UTC) that holds `at`."""
    micros = (at - _EPOCH) // _MICROSECOND
    start = micros - micros % (window_seconds * 1_000_000)
    return _EPOCH + timedelta(microseconds=start)


def firing_windows(
    rows: Sequence[R],
    is_new: Callable[[R], bool],
    window_seconds: int,
    measure: Callable[[Sequence[R]], M | None],
) -> list[Fired[R, M]]:
    """The firing windows of one subject's `rows` (sorted by occurred_at, event_id) that contain a row
    for which `is_new` is true, one per bucket: the earliest start firing in it.

    `measure(window rows)` returns the window's measure when it fires, None when it does not.
    """
    out: dict[datetime, Fired[R, M]] = {}
    n = len(rows)
    new_at = [i for i in range(n) if is_new(rows[i])]
    if not new_at:
        return []
    span = timedelta(seconds=window_seconds)
    end_index = 0
    next_new = 0  # index into new_at: the first new row at or after the window's start
    for i in range(n):
        start = rows[i].occurred_at
        if i > 0 and rows[i - 1].occurred_at == start:
            continue  # the same window as the previous start (peers share a window)
        limit = start + span
        end_index = max(end_index, i)
        while end_index < n and rows[end_index].occurred_at < limit:
            end_index += 1
        while next_new < len(new_at) and new_at[next_new] < i:
            next_new += 1
        if next_new == len(new_at):
            break
        if new_at[next_new] >= end_index:
            continue  # no new row in this window: evaluated by the batch that stored its last row
        bucket = bucket_of(start, window_seconds)
        if bucket in out:
            continue
        window = rows[i:end_index]
        value = measure(window)
        if value is not None:
            out[bucket] = Fired(bucket, start, limit, tuple(window), value)
    return list(out.values())
