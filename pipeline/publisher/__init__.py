"""Publishing room events: the client room servers embed, and a traffic simulator built on it."""

from pipeline.publisher.client import BrokerUnavailableError, DeliveryError, RoomEventPublisher
from pipeline.publisher.simulator import (
    RawEventSink,
    SimulationConfig,
    SimulationSummary,
    iter_events,
    simulate,
)

__all__ = [
    "BrokerUnavailableError",
    "DeliveryError",
    "RawEventSink",
    "RoomEventPublisher",
    "SimulationConfig",
    "SimulationSummary",
    "iter_events",
    "simulate",
]
