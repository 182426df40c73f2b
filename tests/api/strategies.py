"""Hypothesis strategies for the query API's tests: ids and values a client nobody here wrote might send."""

from __future__ import annotations

import uuid

from hypothesis import strategies as st

_MAX_MILLIS = 2**48 - 1
#: Millisecond times a UUIDv7 can carry that sit on an edge: the epoch, the last one a datetime can hold
#: (9999-12-31), the first it cannot, and the largest 48-bit value (year 10889).
EDGE_MILLIS = (0, 253_402_300_799_999 - 86_400_000, 253_402_300_799_999, 253_402_300_800_000, _MAX_MILLIS)


def _millis() -> st.SearchStrategy[int]:
    return st.sampled_from(EDGE_MILLIS) | st.integers(0, _MAX_MILLIS)


@st.composite
def uuids_of_any_version(
    draw: st.DrawFn, version: int | None = None, variant: int | None = None
) -> uuid.UUID:
    """A UUID with any version nibble (0-15), any variant and any 48-bit time in front (v1-v8 alike)."""
    millis = draw(_millis())
    version = draw(st.integers(0, 15)) if version is None else version
    variant = draw(st.sampled_from((0b10, 0b00, 0b11, 0b01))) if variant is None else variant
    rand_a = draw(st.integers(0, 2**12 - 1))
    rand_b = draw(st.integers(0, 2**62 - 1))
    return uuid.UUID(int=(millis << 80) | (version << 76) | (rand_a << 64) | (variant << 62) | rand_b)


def any_uuid() -> st.SearchStrategy[uuid.UUID]:
    """Any UUID, half of them RFC 9562 version 7 (whose time the API reads) with a time of any size."""
    return uuids_of_any_version(version=7, variant=0b10) | uuids_of_any_version() | st.uuids()


def uuid_spellings(value: uuid.UUID) -> st.SearchStrategy[str]:
    """The spellings Python's uuid.UUID accepts for one id (the API takes all of them)."""
    return st.sampled_from(
        (str(value), str(value).upper(), value.hex, "{" + str(value) + "}", "urn:uuid:" + str(value))
    )


def request_ids() -> st.SearchStrategy[str]:
    """X-Request-Id values: UUIDs, short labels that repeat, long ones, odd characters (what HTTP allows)."""
    header_text = st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=300
    )
    return (
        st.uuids().map(str)
        | st.sampled_from(("1", "retry", "00000000-0000-0000-0000-000000000000", "x" * 128, "x" * 129))
        | header_text
    )


#: Query values a parser may not expect: empty, huge, other numerals, NUL, far times, injections.
ODD_VALUES = (
    "",
    " ",
    "0",
    "-1",
    "1e3",
    "10" * 40,
    "\uff19",  # a fullwidth nine
    "\u0663",  # an Arabic-Indic three
    "\x00",
    "nan",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "275760-09-13T00:00:00Z",
    "2024-01-01T00:00:00+23:59",
    "2024-02-30",
    "' OR 1=1 --",
    "%",
    "\\",
    "\U0001f600" * 70,
    "x" * 5000,
)


def odd_values() -> st.SearchStrategy[str]:
    return st.sampled_from(ODD_VALUES) | st.text(max_size=80)
