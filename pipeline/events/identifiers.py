"""The identifier rule, in one place: what a room id, a user id, an item id or an avatar id may be.

An identifier is 1..`ID_MAX_CHARS` characters, none of them a C0 control character (U+0000..U+001F), DEL
(U+007F) or a lone surrogate (U+D800..U+DFFF: no UTF-8 text, so no PostgreSQL text, can hold one).

Who uses it: the normalizer for every id of every event (hot path: `is_identifier` settles the usual case
with `str.isprintable()` and searches for forbidden characters only when that says no), the query API for
ids in paths and query parameters and for a token's subject, and the OpenAPI document (`FORBIDDEN_ECMA`).
The JSON Schema of the contract (`schemas/v1/`) is generated from `FORBIDDEN_ECMA` and `ID_MAX_CHARS`
(pipeline.events.schemas). A copy that cannot import it: migration 0010's check of a token's `sub`.
"""

from __future__ import annotations

import re

from pipeline.events.contract import ID_MAX_CHARS

__all__ = ["FORBIDDEN", "FORBIDDEN_ECMA", "IDENTIFIER", "ID_MAX_CHARS", "is_identifier"]

#: The characters an identifier may not contain, as the body of a regular-expression character class.
FORBIDDEN = r"\x00-\x1f\x7f\ud800-\udfff"
#: The same class as JSON Schema and OpenAPI patterns (ECMA 262) write it. Lone surrogates are left out
#: there: a URL or a JSON document decoded as UTF-8 cannot carry one.
FORBIDDEN_ECMA = r"\u0000-\u001f\u007f"
#: A whole identifier (use with `fullmatch`).
IDENTIFIER = re.compile(rf"[^{FORBIDDEN}]{{1,{ID_MAX_CHARS}}}")

_FORBIDDEN_CHAR = re.compile(f"[{FORBIDDEN}]")


def is_identifier(value: str) -> bool:
    """Whether `value` is an identifier. Same answer as `IDENTIFIER.fullmatch`, faster on the usual case."""
    # isprintable() (C speed) is true for most ids and rules out every forbidden character (categories
    # Cc and Cs are not printable); it is also false for allowed ones (U+00A0, U+200D), hence the search.
    return 0 < len(value) <= ID_MAX_CHARS and (value.isprintable() or _FORBIDDEN_CHAR.search(value) is None)
