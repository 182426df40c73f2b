"""One root exception; behaviour lives on the class, never in the message."""

from __future__ import annotations


class RoomlogsError(Exception):
    """Root of every error roomlogs raises on purpose."""

    #: True when the same call may succeed later (an outage, a lock held by someone else). Read at run
    #: time: `roomlogs retention enforce --loop` waits out a retriable error and exits on any other; the
    #: publisher SDK's callers decide by it whether to send again; the API answers it with Retry-After.
    retriable: bool = False


class ConfigurationError(RoomlogsError):
    """A setting is missing or wrong; the message says which and how to fix it."""


class MissingDependencyError(ConfigurationError):
    """An optional component (embedded broker or PostgreSQL) is not installed."""


class StorageUnavailableError(RoomlogsError):
    """PostgreSQL cannot be reached or is shutting down; the worker pauses and retries."""

    retriable = True


class ContractError(RoomlogsError):
    """A publisher was handed an event that breaks the contract; nothing was sent."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class PublisherClosedError(RoomlogsError):
    """send() after close()."""
