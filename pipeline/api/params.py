"""Query parameters to typed, bounded requests; anything unexpected is a 400 with a stable code.

Unknown parameters are refused (a misspelt filter must not silently widen a read), every value has a
length and a shape, time ranges are capped.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from starlette.datastructures import QueryParams

from pipeline.api.errors import InvalidCursor, InvalidParameter, RangeTooLarge
from pipeline.events.contract import MODERATION_TYPES, EventType
from pipeline.events.identifiers import ID_MAX_CHARS, is_identifier

EVENT_TYPES = tuple(t.value for t in EventType)
MODERATION_TYPE_VALUES = tuple(sorted(t.value for t in MODERATION_TYPES))
#: What PostgreSQL text cannot hold: NUL, and lone surrogates (not UTF-8).
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")
#: Length of the `q` search text.
TEXT_MIN_CHARS, TEXT_MAX_CHARS = 3, 200
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)
MAX_CURSOR_CHARS = 1024
#: The longest spelling of a UUID Python reads ("urn:uuid:" and 36 characters).
_UUID_MAX_CHARS = 45
REASON_HEADER = "x-access-reason"


@dataclass(frozen=True, slots=True)
class TimeRange:
    since: datetime
    until: datetime

    def as_dict(self) -> dict[str, str]:
        return {"since": self.since.isoformat(), "until": self.until.isoformat()}


@dataclass(frozen=True, slots=True)
class EventFilters:
    types: tuple[str, ...] = ()
    actor: str | None = None
    target: str | None = None
    text: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.types:
            out["types"] = list(self.types)
        if self.actor is not None:
            out["actor"] = self.actor
        if self.target is not None:
            out["target"] = self.target
        if self.text is not None:
            out["q"] = self.text
        return out


class Params:
    """One request's query parameters, read through typed getters; `done()` refuses the ones nobody read."""

    def __init__(self, query: QueryParams, now: datetime) -> None:
        self._query = query
        self._read: set[str] = set()
        self.now = now

    def _one(self, name: str) -> str | None:
        self._read.add(name)
        values = self._query.getlist(name)
        if not values:
            return None
        if len(values) > 1:
            raise InvalidParameter(f"{name} may be given once", details={"parameter": name})
        return values[0]

    def done(self) -> None:
        unknown = sorted(set(self._query.keys()) - self._read)
        if unknown:
            raise InvalidParameter(
                f"unknown parameter(s): {', '.join(unknown)[:200]}", details={"parameters": unknown[:10]}
            )

    def timestamp(self, name: str) -> datetime | None:
        raw = self._one(name)
        if raw is None:
            return None
        return parse_timestamp(raw, name)

    def time_range(self, *, default: timedelta, max_days: int) -> TimeRange:
        """since/until, defaulting to the `default` span that ends now (or starts at `since`), capped."""
        return resolve_range(self.explicit_range(), None, self.now, default=default, max_days=max_days)

    def explicit_range(self) -> tuple[datetime | None, datetime | None]:
        return self.timestamp("since"), self.timestamp("until")

    def ident(self, name: str) -> str | None:
        raw = self._one(name)
        if raw is None:
            return None
        return check_ident(raw, name)

    def matching(self, name: str, pattern: re.Pattern[str], shape: str) -> str | None:
        """The parameter when it has the whole shape `pattern` (`shape` says it in words), else a 400."""
        raw = self._one(name)
        if raw is not None and not pattern.fullmatch(raw):
            raise InvalidParameter(f"{name} must be {shape}", details={"parameter": name})
        return raw

    def choice(self, name: str, allowed: Iterable[str], default: str) -> str:
        raw = self._one(name)
        if raw is None:
            return default
        options = tuple(allowed)
        if raw not in options:
            raise InvalidParameter(f"{name} must be one of {', '.join(options)}", details={"parameter": name})
        return raw

    def integer(self, name: str, *, default: int | None, low: int, high: int) -> int | None:
        raw = self._one(name)
        if raw is None:
            return default
        if not re.fullmatch(r"[0-9]{1,9}", raw):
            raise InvalidParameter(f"{name} must be a whole number", details={"parameter": name})
        value = int(raw)
        if not low <= value <= high:
            raise InvalidParameter(f"{name} must be between {low} and {high}", details={"parameter": name})
        return value

    def cursor(self) -> str | None:
        raw = self._one("cursor")
        if raw is not None and not 0 < len(raw) <= MAX_CURSOR_CHARS:
            raise InvalidParameter("cursor is malformed", details={"parameter": "cursor"})
        return raw

    def types(self, allowed: tuple[str, ...] = EVENT_TYPES) -> tuple[str, ...]:
        """The repeatable `type` parameter: sorted, without duplicates, each one of `allowed`."""
        self._read.add("type")
        types = self._query.getlist("type")
        for t in types:
            if t not in allowed:
                raise InvalidParameter(
                    f"type must be one of {', '.join(allowed)}", details={"parameter": "type"}
                )
        return tuple(sorted(set(types)))

    def uuids(self, name: str, *, max_count: int) -> tuple[uuid.UUID, ...]:
        """A repeatable UUID parameter: sorted, without duplicates, at most `max_count` of them."""
        self._read.add(name)
        values = self._query.getlist(name)
        if len(values) > max_count:
            raise InvalidParameter(
                f"{name} may be given at most {max_count} times", details={"parameter": name}
            )
        found: set[uuid.UUID] = set()
        for raw in values:
            value = parse_uuid(raw)
            if value is None:
                raise InvalidParameter(f"{name} must be a UUID", details={"parameter": name})
            found.add(value)
        return tuple(sorted(found))

    def date(self, name: str) -> date | None:
        raw = self._one(name)
        if raw is None:
            return None
        try:
            value = date.fromisoformat(raw) if len(raw) == 10 else None
        except ValueError:
            value = None
        if value is None:
            raise InvalidParameter(f"{name} must be a date such as 2024-05-01", details={"parameter": name})
        if not 2000 <= value.year < 2100:
            raise InvalidParameter(f"{name} must lie between 2000 and 2100", details={"parameter": name})
        return value

    def filters(self) -> EventFilters:
        types = self.types()
        text = self._one("q")
        if text is not None and (
            not TEXT_MIN_CHARS <= len(text) <= TEXT_MAX_CHARS or _UNSTORABLE.search(text)
        ):
            raise InvalidParameter(
                f"q must be {TEXT_MIN_CHARS}..{TEXT_MAX_CHARS} characters", details={"parameter": "q"}
            )
        return EventFilters(types=types, actor=self.ident("actor"), target=self.ident("target"), text=text)


def resolve_range(
    explicit: tuple[datetime | None, datetime | None],
    from_cursor: tuple[datetime, datetime] | None,
    now: datetime,
    *,
    default: timedelta,
    max_days: int,
) -> TimeRange:
    """A paginated query's range: the cursor's (since/until, if given, must repeat it) or the request's."""
    since, until = explicit
    if from_cursor is not None:
        if (since is not None and since != from_cursor[0]) or (until is not None and until != from_cursor[1]):
            raise InvalidCursor("the cursor was issued for another time range")
        return TimeRange(*from_cursor)
    if until is None:
        until = since + default if since is not None else now
    if since is None:
        since = until - default
    return bounded_range(since, until, max_days)


def bounded_range(since: datetime, until: datetime, max_days: int) -> TimeRange:
    if since >= until:
        raise InvalidParameter("since must be before until", details={"parameter": "since"})
    if until - since > timedelta(days=max_days):
        raise RangeTooLarge(
            f"the time range may cover at most {max_days} days", details={"max_days": max_days}
        )
    return TimeRange(since, until)


def parse_timestamp(raw: str, name: str) -> datetime:
    if len(raw) > 40:
        raise InvalidParameter(f"{name} must be an RFC 3339 timestamp", details={"parameter": name})
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidParameter(
            f"{name} must be an RFC 3339 timestamp such as 2024-05-01T12:00:00Z", details={"parameter": name}
        ) from None
    if moment.tzinfo is None:
        raise InvalidParameter(f"{name} needs a UTC offset (Z or +hh:mm)", details={"parameter": name})
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        raise InvalidParameter(f"{name} is out of range", details={"parameter": name}) from None
    if not _EARLIEST <= moment < _LATEST:
        raise InvalidParameter(f"{name} must lie between 2000 and 2100", details={"parameter": name})
    return moment


def parse_uuid(raw: str) -> uuid.UUID | None:
    """`raw` as a UUID, or None when it is not one (or longer than any spelling of one)."""
    if len(raw) > _UUID_MAX_CHARS:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


def storable(text: str) -> bool:
    """Whether PostgreSQL text (and jsonb) can hold `text` as it is."""
    return _UNSTORABLE.search(text) is None


def check_ident(raw: str, name: str) -> str:
    """`raw` if it is an identifier (pipeline.events.identifiers), else InvalidParameter (400)."""
    if not is_identifier(raw):
        raise InvalidParameter(
            f"{name} must be 1..{ID_MAX_CHARS} printable characters", details={"parameter": name}
        )
    return raw


def like_pattern(text: str) -> str:
    """A substring ILIKE pattern matching `text` literally (% _ and \\ escaped)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
