"""Errors of the retention stage. All derive from RoomlogsError, so the CLI prints them and exits 2."""

from __future__ import annotations

from pipeline.errors import RoomlogsError


class RetentionError(RoomlogsError):
    """Root of the retention stage's errors."""


class UnknownRetentionClassError(RetentionError):
    """A retention class name that is not in `retention_classes`."""


class InvalidHoldError(RetentionError):
    """A hold request without a room, a reason or the name of who asked."""


class HoldNotFoundError(RetentionError):
    """No hold with that id, or it is already released."""


class HeldRowsSchemaError(RetentionError):
    """`held_events` lacks a column of `events`: preserving held rows would lose data, so nothing is dropped.

    Fixed by a migration adding the column to `held_events` (and to the `stored_events` view).
    """
