"""The vocabulary the event contract is written in: what an event type and each of its fields may be.

`pipeline/events/contract.py` states contract v1 with it, one `EventSpec` per type, and everything else
is derived from those entries, as asyncpg derives its exception classes from PostgreSQL's errcodes.txt:

- the normalizer's allowlists (`EventSpec.field_names`), and its rule for a type it has no hand-written
  rule for (`Normalizer` interprets the spec);
- what a dead letter may keep of `data` and how far each string is cut (`pipeline.events.deadletter`);
- the JSON Schema files in `schemas/v1` and the console's type labels, written by
  `python -m pipeline.events.generate` and checked against the spec by tests/events/test_spec.py.

Only the standard library: the publisher's base install imports this.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "UNDECLARED",
    "Boolean",
    "Choice",
    "Contract",
    "EventSpec",
    "Field",
    "Identifier",
    "Integer",
    "Kind",
    "Record",
    "Setting",
    "SettingChanges",
    "Text",
    "Url",
    "Uuid",
]

#: What every object of the contract says about the fields it does not declare.
UNDECLARED = (
    "Fields not declared here are accepted and dropped: they are never stored, only counted. "
    "`additionalProperties` is true so that adding a field in a later release is not a breaking change, "
    "not as an invitation to send more."
)


@dataclass(frozen=True, slots=True)
class Identifier:
    """An opaque id (`pipeline.events.identifiers`): 1..ID_MAX_CHARS characters; longer is refused."""


@dataclass(frozen=True, slots=True)
class Uuid:
    """An event id, 8-4-4-4-12 hex digits in either case; stored lower-case."""


@dataclass(frozen=True, slots=True)
class Choice:
    """One of a fixed list of strings (the order is the one documented)."""

    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Integer:
    """A whole number in minimum..maximum (25.0 counts as 25, as in JSON Schema); outside is refused."""

    minimum: int
    maximum: int


@dataclass(frozen=True, slots=True)
class Boolean:
    """true or false."""


@dataclass(frozen=True, slots=True)
class Text:
    """Free text: cut at `max_chars`, never refused for its length; NUL becomes U+FFFD.

    `masked`: e-mail addresses, card numbers and IP addresses in it are replaced before it is stored.
    `limit_setting`: the `Settings` field that overrides `max_chars` (the normalizer's and the dead-letter
    view's keyword of the same name). `truncated_flag`: the payload key set to true when it was cut.
    """

    max_chars: int
    masked: bool = False
    min_chars: int = 0
    limit_setting: str | None = None
    truncated_flag: str | None = None


@dataclass(frozen=True, slots=True)
class Url:
    """A URL that starts with `scheme` and has at most `max_chars` characters; otherwise refused."""

    max_chars: int
    scheme: str = "https://"


@dataclass(frozen=True, slots=True)
class Record:
    """An object with its own declared fields; undeclared ones are dropped and counted.

    `def_name`: the envelope schema's `$defs` entry it is published as (`user`, `avatar`), shared by every
    field of that kind; None: written out where it is used.
    """

    fields: tuple[Field, ...]
    description: str
    undeclared_note: str = ""
    def_name: str | None = None

    @property
    def field_names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields)


@dataclass(frozen=True, slots=True)
class Setting:
    """One room setting that may be logged: `{"old": ..., "new": ...}`, both nullable.

    `new` narrows what the new value may be (privacy: a `Choice`); None: the same as `old`.
    """

    name: str
    old: Text | Integer | Boolean
    description: str
    new: Choice | None = None

    @property
    def python_type(self) -> type:
        return {Text: str, Integer: int, Boolean: bool}[type(self.old)]


@dataclass(frozen=True, slots=True)
class SettingChanges:
    """`room.settings_changed`'s `changes`: setting name -> change. Unknown settings are dropped and
    counted; at least one known one must be there. Only the normalizer's hand-written rule reads it."""

    settings: tuple[Setting, ...]
    description: str


Kind = Identifier | Uuid | Choice | Integer | Boolean | Text | Url | Record | SettingChanges


@dataclass(frozen=True, slots=True)
class Field:
    """One declared field of `data` (or of a nested record).

    `required`: absent or null is refused (missing_field); otherwise null is the same as absent, unless
    `null_kept` (null means something, e.g. "until lifted": stored as null). `column`: the stored row's
    column the value goes to instead of the payload (`body`: the text; `target_id`: the user's id, the
    user itself staying in the payload).
    """

    name: str
    kind: Kind
    required: bool = False
    null_kept: bool = False
    column: Literal["body", "target_id"] | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class EventSpec:
    """Everything about one event type, in one place.

    `label`: what the room console calls it; `console_rank`: where it stands in the console's lists
    (ascending). `summary`: what it means (the schema's description of `data`). `actor_optional`: a null
    or absent actor means the platform itself. `private_markers`: fields whose presence (even null) makes
    it a private message, refused and never kept. `data` may be absent when no field is required.
    """

    type: str
    label: str
    console_rank: int
    summary: str
    fields: tuple[Field, ...] = ()
    actor_optional: bool = False
    private_markers: tuple[str, ...] = ()
    undeclared_note: str = ""

    @property
    def field_names(self) -> frozenset[str]:
        """The allowlist of `data`: anything else there is dropped and counted."""
        return frozenset(f.name for f in self.fields)

    @property
    def data_required(self) -> bool:
        return any(f.required for f in self.fields)

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    def record(self, name: str) -> Record:
        """The nested record a field holds (gift.sent's `item`)."""
        field = self.field(name)
        if field is None or not isinstance(field.kind, Record):
            raise KeyError(f"{self.type}.{name} is not a record")
        return field.kind


@dataclass(frozen=True, slots=True)
class Contract:
    """One version of the contract: its event types in their documented order, and the user object."""

    version: int
    events: tuple[EventSpec, ...]
    user: Record

    def __post_init__(self) -> None:
        types = [e.type for e in self.events]
        if len(set(types)) != len(types):
            raise ValueError(f"an event type is specified twice: {types}")

    def __iter__(self) -> Iterator[EventSpec]:
        return iter(self.events)

    def __getitem__(self, event_type: str) -> EventSpec:
        for spec in self.events:
            if spec.type == event_type:
                return spec
        raise KeyError(event_type)

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(e.type for e in self.events)

    def allowlists(self) -> dict[str, frozenset[str]]:
        """Per type, the fields of `data` that are kept."""
        return {e.type: e.field_names for e in self.events}

    def with_event(self, spec: EventSpec) -> Contract:
        """This contract with one more type (for tests and for drafting a new type)."""
        return Contract(self.version, (*self.events, spec), self.user)
