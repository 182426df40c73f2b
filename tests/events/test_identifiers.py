"""The identifier rule has one definition: its fast predicate and its pattern give the same answer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.events.identifiers import ID_MAX_CHARS, IDENTIFIER, is_identifier


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("room-1", True),
        ("u", True),
        ("x" * ID_MAX_CHARS, True),
        ("ユーザー 1", True),
        ("no\u00a0break", True),  # not printable for Python, allowed by the contract
        ("zero\u200dwidth", True),
        ("c1\u0085control", True),  # only C0 controls and DEL are banned
        ("", False),
        ("x" * (ID_MAX_CHARS + 1), False),
        ("tab\there", False),
        ("nul\x00", False),
        ("del\x7f", False),
        ("new\nline", False),
        ("half\ud83d", False),
    ],
)
def test_examples(value: str, ok: bool) -> None:
    assert is_identifier(value) is ok
    assert (IDENTIFIER.fullmatch(value) is not None) is ok


# any code point, surrogates included, with the boundary characters often
_CHARS = st.characters(exclude_categories=()) | st.sampled_from("\x00\x1f\x20\x7e\x7f\x80\ud800\udfff")


@given(st.text(alphabet=_CHARS, max_size=ID_MAX_CHARS + 2))
def test_predicate_and_pattern_agree(value: str) -> None:
    assert is_identifier(value) == (IDENTIFIER.fullmatch(value) is not None)
