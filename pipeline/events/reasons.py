"""Stable reason codes for everything that is not stored as a room log.

These strings are part of the public surface: they appear in the dead-letter table, the dead-letter topic's
headers and the `reason` label of metrics. Add codes; never rename one.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    OVERSIZE = "oversize"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    INVALID_VALUE = "invalid_value"
    UNKNOWN_TYPE = "unknown_type"
    UNSUPPORTED_VERSION = "unsupported_version"
    INVALID_TIMESTAMP = "invalid_timestamp"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    #: Whispers and direct messages are not room logs. Refused; their content is never kept anywhere.
    PRIVATE_MESSAGE = "private_message"
    #: PostgreSQL refused the row although the normalizer accepted it (found by splitting the batch).
    STORAGE_REJECTED = "storage_rejected"
    #: An event id already stored with other content (another time, text, room...): a producer reused an
    #: id, or changed an event before resending it. The stored copy stands; this one is kept for review.
    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    #: A valid event of a UTC day already sealed (closed ROOMLOGS_SEAL_LATE_WINDOW_SECONDS after it ended):
    #: the seal says the day's events are exactly those it covers. Kept, normalized, for review.
    DAY_SEALED = "day_sealed"
    #: The normalizer itself failed on the record (an exception other than a refusal: a roomlogs bug, to
    #: report). Set aside so the partition goes on; only its fingerprint is kept (whether its content may
    #: be kept could not be judged), and `dead-letters replay` reads it again from Kafka once fixed.
    NORMALIZER_FAILED = "normalizer_failed"


#: Reasons whose raw bytes must not be kept in the dead-letter record
#: (keeping them would store what we promise never to store).
RAW_WITHHELD = frozenset({Reason.PRIVATE_MESSAGE})


class Invalid(Exception):
    """Raised inside the normalizer; turned into a dead-letter record by the caller."""

    __slots__ = ("detail", "reason")

    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
