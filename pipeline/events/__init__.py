"""The event contract: types, normalization, and reason codes for what is not stored."""

from pipeline.events.contract import SCHEMA_VERSION, EventType
from pipeline.events.normalize import Normalizer
from pipeline.events.reasons import Invalid, Reason

__all__ = ["SCHEMA_VERSION", "EventType", "Invalid", "Normalizer", "Reason"]
