"""Publishing room events: the client room servers embed, and a traffic simulator built on it."""

from pipeline.kafka_client import KafkaConnection
from pipeline.publisher.client import (
    BrokerUnavailableError,
    DeliveryError,
    PublisherAccessError,
    RoomEventPublisher,
    TopicNotFoundError,
)
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
    "KafkaConnection",
    "PublisherAccessError",
    "RawEventSink",
    "RoomEventPublisher",
    "SimulationConfig",
    "SimulationSummary",
    "TopicNotFoundError",
    "iter_events",
    "simulate",
]
