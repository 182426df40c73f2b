"""The detectors' parameters: built-in defaults per retention class, and operators' overrides on top.

Each detector has a window (`window_seconds`) and a threshold, plus what it needs besides; all are whole
numbers. What a room gets, in order: the built-in default, the built-in default of its retention class,
the operator's setting for its class, the operator's setting for the room (`detector_settings`, migration
0017, written by `roomlogs detectors set`). README "Detectors" says why each default is what it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "CLASS_DEFAULTS",
    "DEFAULTS",
    "DETECTORS",
    "RANGES",
    "Effective",
    "check_params",
]

CHAT_FLOOD = "chat_flood"
SPAM_WAVE = "spam_wave"
RAID = "raid"
MODERATOR_ABUSE = "moderator_abuse"
PERMISSION_CHURN = "permission_churn"
GIFT_BURST = "gift_burst"
#: Every detector, in the order they run and are listed.
DETECTORS = (CHAT_FLOOD, SPAM_WAVE, RAID, MODERATOR_ABUSE, PERMISSION_CHURN, GIFT_BURST)

DEFAULTS: dict[str, dict[str, int]] = {
    # one user: more than max_messages chat messages in window_seconds
    CHAT_FLOOD: {"window_seconds": 10, "max_messages": 40},
    # the same normalized text, at least min_text_chars long, from at least min_users users
    SPAM_WAVE: {"window_seconds": 30, "min_users": 6, "min_text_chars": 10},
    # distinct users entering: at least max(min_users, multiplier x the room's usual entries per window
    # at that hour of the week, over the baseline_weeks weeks before)
    RAID: {"window_seconds": 60, "min_users": 40, "multiplier": 10, "baseline_weeks": 4},
    # one moderator warning, muting, kicking or banning more than max_targets distinct users
    MODERATOR_ABUSE: {"window_seconds": 60, "max_targets": 12},
    # one setting, or one user's role, changed back to what it was at least min_reversions times
    PERMISSION_CHURN: {"window_seconds": 120, "min_reversions": 5},
    # one sender to one recipient: more than max_gifts gifts
    GIFT_BURST: {"window_seconds": 60, "max_gifts": 10},
}
#: Per retention class, what differs from DEFAULTS (rooms of a class differ in size, hence raids).
CLASS_DEFAULTS: dict[str, dict[str, dict[str, int]]] = {
    "busy_public": {RAID: {"min_users": 80}},
    "private": {RAID: {"min_users": 15}},
}
#: Allowed values of each parameter (inclusive).
RANGES: dict[str, tuple[int, int]] = {
    "window_seconds": (1, 3600),
    "max_messages": (1, 10_000),
    "min_users": (2, 100_000),
    "min_text_chars": (0, 2000),
    "multiplier": (1, 1000),
    "baseline_weeks": (0, 12),
    "max_targets": (1, 10_000),
    "min_reversions": (1, 1000),
    "max_gifts": (1, 10_000),
}
#: The largest window any setting may give: how far around a new row the detectors may read.
MAX_WINDOW_SECONDS = RANGES["window_seconds"][1]


def check_params(detector: str, params: Mapping[str, object]) -> dict[str, int]:
    """`params` checked against `detector`'s parameters and their ranges; ValueError (TypeError for a
    value that is not a whole number) says what is wrong."""
    if detector not in DEFAULTS:
        raise ValueError(f"no detector {detector!r} (one of {', '.join(DETECTORS)})")
    known = DEFAULTS[detector]
    out: dict[str, int] = {}
    for name, value in params.items():
        if name not in known:
            raise ValueError(f"{detector} has no parameter {name!r} (it has {', '.join(known)})")
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{detector}.{name} must be a whole number, not {value!r}")
        low, high = RANGES[name]
        if not low <= value <= high:
            raise ValueError(f"{detector}.{name} must be {low}..{high}, not {value}")
        out[name] = value
    return out


@dataclass(frozen=True, slots=True)
class Effective:
    """A detector's parameters for one room, and whether it runs there."""

    enabled: bool
    params: Mapping[str, int]

    @property
    def window_seconds(self) -> int:
        return self.params["window_seconds"]


def builtin(detector: str, retention_class: str) -> dict[str, int]:
    """The built-in parameters of `detector` for rooms of `retention_class`."""
    return {**DEFAULTS[detector], **CLASS_DEFAULTS.get(retention_class, {}).get(detector, {})}
