"""RoomEventPublisher: the asyncio client a room server embeds to publish its rooms' events to Kafka.

Who calls it: room servers (one publisher per process, shared by all its rooms), `roomlogs simulate` and the
benchmark. Lifecycle: `start()` (or `async with`), any number of `send()` / `send_raw()`, `close()`.

What it promises:
- an event that breaks the contract is refused at the door: `send()` raises ContractError and sends nothing;
- a room's events go to one partition, in the order `send()` was called (key = room_id, acks=all);
- at most `max_buffered_events` events wait for an acknowledgement; `send()` waits for room beyond that
  (backpressure instead of unbounded memory);
- nothing is lost silently: a delivery that fails after `send()` returned is counted (`failed`,
  `last_error`), reported by the next `flush()`, and `close()` raises DeliveryError if any delivery ever
  failed. `close()` delivers everything still buffered before it stops (cf. aiokafka #923);
- a caller that needs to know which events arrived awaits the future `send()` returns: it resolves when
  the broker acknowledged that event, and fails with the error when it will never be delivered.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import orjson
import uuid_utils
from aiokafka import AIOKafkaProducer, codec
from aiokafka.errors import (
    BrokerResponseError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from aiokafka.partitioner import DefaultPartitioner, murmur2
from prometheus_client import CollectorRegistry

from pipeline.errors import (
    ConfigurationError,
    ContractError,
    MissingDependencyError,
    PublisherClosedError,
    RoomlogsError,
)
from pipeline.events.contract import SCHEMA_VERSION
from pipeline.events.normalize import Normalizer
from pipeline.events.reasons import Invalid, Reason
from pipeline.kafka_client import KafkaConnection, find_refusal
from pipeline.publisher.metrics import PublisherCollector
from pipeline.settings import Settings

log = logging.getLogger(__name__)

COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
#: compression -> (aiokafka's check that its library is importable, the package that provides it: aiokafka
#: uses cramjam for all three, which `roomlogs[compression]` and `roomlogs[worker]` install)
_COMPRESSION_LIBRARIES = {
    "gzip": (codec.has_gzip, "gzip"),
    "snappy": (codec.has_snappy, "cramjam"),
    "lz4": (codec.has_lz4, "cramjam"),
    "zstd": (codec.has_zstd, "cramjam"),
}
_DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
#: send() yields to the event loop after this many sends (fairness between sending tasks).
_YIELD_EVERY_SENDS = 64


class BrokerUnavailableError(RoomlogsError):
    """start() could not reach the broker; the room server may retry later."""

    retriable = True


class PublisherAccessError(ConfigurationError):
    """start(): the broker refused this publisher's certificate check, credentials or protocol."""


class TopicNotFoundError(ConfigurationError):
    """start(): the topic is not there (or not visible to this publisher); nothing was sent."""


#: What to change, per kafka_client.Refusal.cause, in the publisher's own arguments.
_ARGUMENT_TO_FIX = {
    "untrusted_certificate": "pass an ssl_context that trusts the CA that signed it",
    "tls_failed": "check security_protocol (does that listener speak TLS?)",
    "authentication_failed": "check sasl_password (and sasl_username, sasl_mechanism)",
    "mechanism_unsupported": "check sasl_mechanism",
    "connection_closed": "check security_protocol (that listener may require TLS or SASL)",
}


class DeliveryError(RoomlogsError):
    """Events handed to the publisher were not acknowledged by the broker.

    `failed` is how many (since the publisher started, for close(); since the last report, for flush()
    and send()); `last_error` is the most recent cause (an aiokafka error).
    """

    retriable = True

    def __init__(self, failed: int, last_error: BaseException | None) -> None:
        super().__init__(f"{failed} event(s) not delivered; last error: {last_error!r}")
        self.failed = failed
        self.last_error = last_error


class RoomPartitioner:
    """Kafka's default partitioner (murmur2 of the key, as the Java client), remembering each key's hash.

    A room server sends many events per room; aiokafka's pure-Python murmur2 was a tenth of the cost of
    a send. Same partition for the same key as any other Kafka client. Keeps at most `max_keys` hashes.
    """

    def __init__(self, max_keys: int = 65_536) -> None:
        self._hashes: dict[bytes, int] = {}
        self._max_keys = max_keys
        self._fallback = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return self._fallback(key, all_partitions, available)  # type: ignore[no-any-return]
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self._max_keys:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a 'Z', microsecond precision: 2024-05-01T12:00:00.123456Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RoomEventPublisher:
    """Validates, serializes and publishes room events; one instance per process, used from one event loop."""

    def __init__(
        self,
        *,
        bootstrap: str | None = None,
        topic: str,
        idempotent: bool,
        compression: str = "gzip",
        linger_seconds: float = 0.005,
        max_batch_bytes: int = 256 * 1024,
        max_buffered_events: int = 10_000,
        validate: bool = True,
        max_event_bytes: int = 64 * 1024,
        max_future_skew_seconds: float = 300.0,
        request_timeout_seconds: float = 40.0,
        clock: Callable[[], datetime] = _utc_now,
        registry: CollectorRegistry | None = None,
        security_protocol: str = "PLAINTEXT",
        ssl_context: ssl.SSLContext | None = None,
        sasl_mechanism: str | None = None,
        sasl_username: str | None = None,
        sasl_password: str | None = None,
        connection: KafkaConnection | None = None,
    ) -> None:
        """`idempotent` must match the broker: Apache Kafka supports it, the embedded Tansu does not.

        Where to connect: a `connection` (pipeline.kafka_client.KafkaConnection, what every roomlogs client
        uses), or `bootstrap` with the security arguments: `security_protocol` is PLAINTEXT, SSL,
        SASL_PLAINTEXT or SASL_SSL; TLS uses `ssl_context` (it decides which CA to trust), SASL uses
        `sasl_mechanism` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), `sasl_username` and `sasl_password`.
        `start()` raises PublisherAccessError, saying which of these to fix, when the broker refuses them.

        `request_timeout_seconds` bounds each produce request and how long an event may wait for its
        acknowledgement before it counts as failed. `validate=False` skips the contract and size checks in
        `send()`, for tools that send deliberately bad events. `clock` returns an aware UTC datetime (it
        stamps `occurred_at` and is the "now" of the future-timestamp check). With a `registry`, the
        counters below are exported as roomlogs_publisher_* metrics (read at scrape time: no cost per send).
        """
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression={compression!r}: use one of {', '.join(COMPRESSIONS)}")
        if compression != "none":
            available, package = _COMPRESSION_LIBRARIES[compression]
            if not available():
                raise MissingDependencyError(
                    f"compression {compression!r} needs the {package} package: pip install "
                    f"'roomlogs[compression]' (or {package}), or set ROOMLOGS_KAFKA_COMPRESSION=gzip"
                )
        if max_buffered_events <= 0 or max_batch_bytes <= 0 or max_event_bytes <= 0:
            raise ValueError("max_buffered_events, max_batch_bytes and max_event_bytes must be positive")
        if linger_seconds < 0 or request_timeout_seconds <= 0:
            raise ValueError("linger_seconds must be >= 0 and request_timeout_seconds > 0")
        if connection is None:
            if bootstrap is None:
                raise ValueError("give the broker: bootstrap=..., or connection=KafkaConnection(...)")
            connection = KafkaConnection(
                bootstrap,
                security_protocol,
                ssl_context,
                sasl_mechanism or "PLAIN" if security_protocol.startswith("SASL_") else None,
                sasl_username,
                sasl_password,
            )
        self.connection = connection
        self.bootstrap = connection.bootstrap
        self.topic = topic
        self.idempotent = idempotent
        self.compression = compression
        self.linger_seconds = linger_seconds
        self.max_batch_bytes = max_batch_bytes
        self.max_buffered_events = max_buffered_events
        self.max_event_bytes = max_event_bytes
        self.request_timeout_seconds = request_timeout_seconds
        self._clock = clock
        self._normalizer = (
            Normalizer(max_event_bytes=max_event_bytes, max_future_skew_seconds=max_future_skew_seconds)
            if validate
            else None
        )
        self._producer: Any = None
        self._closed = False
        self._slots = asyncio.Semaphore(max_buffered_events)
        #: Events accepted by the producer (in its buffer or acknowledged).
        self.sent = 0
        #: Events the broker acknowledged.
        self.acked = 0
        #: Events that will never be delivered (refused by the producer, timed out, lost at shutdown).
        self.failed = 0
        self.last_error: BaseException | None = None
        self._failed_reported = 0
        #: Events handed to the producer and not yet settled; never above `max_buffered_events`.
        self.in_flight = 0
        self.peak_in_flight = 0
        if registry is not None:
            registry.register(PublisherCollector(self))
        # flush() bookkeeping: every send() is counted in the epoch current when it was called; a flush
        # closes the epoch and waits until no send of that or an earlier epoch is open.
        self._epoch = 0
        self._open: dict[int, int] = {}
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        #: Producer futures not yet settled -> the epoch of their send().
        self._pending: dict[asyncio.Future[Any], int] = {}
        self._sends_since_yield = 0
        self._delivered = self._on_delivery  # bound once: the hot path adds it to every future
        self._renew = False
        self._renew_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RoomEventPublisher:
        """The publisher the pipeline's own tools use; `overrides` tune the rest (linger, buffer size)."""
        params: dict[str, Any] = {
            "connection": KafkaConnection.of(settings),
            "topic": settings.events_topic,
            "idempotent": settings.kafka_idempotent_producer,
            "compression": settings.kafka_compression,
            "max_event_bytes": settings.max_event_bytes,
            "max_future_skew_seconds": settings.max_future_skew_seconds,
        }
        params.update(overrides)
        return cls(**params)

    # --- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect to the broker and find the topic; a no-op when started.

        Raises BrokerUnavailableError (retriable) when no broker answers, PublisherAccessError when one
        refuses the certificate check, credentials or protocol (the message says which argument to fix),
        and TopicNotFoundError when the topic is not there after `request_timeout_seconds`.
        """
        if self._closed:
            raise PublisherClosedError("this publisher was closed; create a new one")
        if self._producer is not None:
            return
        self._producer = await self._connect()

    async def _connect(self) -> Any:
        """A started producer that has found the topic (see start() for the errors)."""
        producer = AIOKafkaProducer(
            **self.connection.kwargs(),
            acks="all",
            enable_idempotence=self.idempotent,
            compression_type=None if self.compression == "none" else self.compression,
            linger_ms=round(self.linger_seconds * 1000),
            max_batch_size=self.max_batch_bytes,
            request_timeout_ms=round(self.request_timeout_seconds * 1000),
            partitioner=RoomPartitioner(),
            # room for events somewhat over max_event_bytes, which validate=False / send_raw() may send
            max_request_size=max(_DEFAULT_MAX_REQUEST_BYTES, self.max_batch_bytes, self.max_event_bytes * 2),
        )
        try:
            await producer.start()
        except KafkaConnectionError as exc:
            await producer.stop()
            refusal = await find_refusal(self.bootstrap, self.connection.security())
            if refusal is not None:
                raise PublisherAccessError(f"{refusal.detail}: {_ARGUMENT_TO_FIX[refusal.cause]}") from None
            raise BrokerUnavailableError(f"cannot reach the Kafka broker at {self.bootstrap}: {exc}") from exc
        except KafkaError as exc:
            await producer.stop()
            raise BrokerUnavailableError(f"cannot reach the Kafka broker at {self.bootstrap}: {exc}") from exc
        except BaseException:
            await producer.stop()
            raise
        try:
            await producer.partitions_for(self.topic)  # waits up to request_timeout_seconds for metadata
        except (UnknownTopicOrPartitionError, TopicAuthorizationFailedError, KafkaTimeoutError) as exc:
            await producer.stop()
            raise TopicNotFoundError(
                f"topic {self.topic!r} does not exist on the Kafka broker at {self.bootstrap}, or this "
                f"publisher may not see it ({type(exc).__name__}); brokers with auto-creation off need it "
                "created first (`roomlogs worker` and `roomlogs simulate` create it), or a DESCRIBE/WRITE ACL"
            ) from None
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def _renew_producer(self) -> None:
        """Replace an idempotent producer whose sequence the broker broke off.

        When the broker refuses a batch (too large, for example), aiokafka's idempotent producer keeps
        its producer id and sequence numbers, so every later batch to that partition fails with
        OutOfOrderSequenceNumber (the Java client bumps the epoch instead). What was in flight settles
        first (failures counted), then a new producer, with a new producer id, takes over.
        """
        async with self._renew_lock:
            if not self._renew:
                return
            await self._wait_settled()
            old, self._producer = self._producer, await self._connect()
            self._renew = False
            await old.stop()
            log.warning("publisher to %s: new idempotent producer after a refused batch", self.topic)

    async def flush(self) -> None:
        """Wait until every event handed to send()/send_raw() before this call is acknowledged or failed.

        Lingering batches are sent at once. Raises DeliveryError if deliveries failed since the last
        report (the events are not retried: the caller decides).
        """
        await self._wait_settled()
        self._raise_unreported()

    async def close(self) -> None:
        """Deliver what is buffered, then disconnect. Later send() calls raise PublisherClosedError.

        Raises DeliveryError if any event handed to this publisher was not delivered (including
        failures flush() already reported): a clean close means everything arrived.
        """
        if self._closed:
            return
        self._closed = True
        producer = self._producer
        if producer is None:
            return
        try:
            await self._wait_settled()
        finally:
            try:
                await producer.stop()
            finally:
                self._count_lost()
        if self.failed:
            self._failed_reported = self.failed
            raise DeliveryError(self.failed, self.last_error)

    async def __aenter__(self) -> RoomEventPublisher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- sending ------------------------------------------------------------------------------------
    async def send(self, event: Mapping[str, Any]) -> asyncio.Future[Any]:
        """Publish one event (a dict following contract v1); returns once the producer buffered it.

        Fills `event_id` (UUIDv7), `schema_version` and `occurred_at` (now) when absent, without changing
        the caller's dict. Raises ContractError (reason = the code the worker would dead-letter it with)
        and sends nothing if the event breaks the contract; DeliveryError if the producer refuses it;
        PublisherClosedError after close(). Waits while `max_buffered_events` are unacknowledged.

        Returns the event's delivery: a future that resolves (to aiokafka's RecordMetadata) once the
        broker acknowledged the event, or fails with the error that ends its delivery. Awaiting it is
        optional: every outcome is counted and reported by flush()/close() either way.
        """
        self._check_open()
        key, value = self._encode(event)
        return await self._enqueue(key, value)

    async def send_raw(self, key: bytes | None, value: bytes) -> None:
        """Publish bytes as they are: no validation, no defaults. For tools (simulator, benchmark)."""
        self._check_open()
        await self._enqueue(key, value)

    def _check_open(self) -> None:
        if self._closed:
            raise PublisherClosedError("send() after close(): this publisher is closed")
        if self._producer is None:
            raise PublisherClosedError("publisher not started: call start() or use 'async with'")

    def _encode(self, event: Mapping[str, Any]) -> tuple[bytes | None, bytes]:
        """Fill the defaults, serialize, and check the bytes exactly as the worker will read them."""
        if not isinstance(event, Mapping):
            raise ContractError(Reason.NOT_AN_OBJECT, f"event is a {type(event).__name__}, expected a dict")
        now = self._clock()
        get = event.get
        if get("event_id") is None or get("schema_version") is None or get("occurred_at") is None:
            doc = dict(event)  # the caller's dict stays as it was
            if get("event_id") is None:
                doc["event_id"] = str(uuid_utils.uuid7())
            if get("schema_version") is None:
                doc["schema_version"] = SCHEMA_VERSION
            if get("occurred_at") is None:
                doc["occurred_at"] = format_timestamp(now)
        else:
            doc = event if isinstance(event, dict) else dict(event)
        try:
            value = orjson.dumps(doc)
        except orjson.JSONEncodeError as exc:
            raise ContractError(Reason.INVALID_VALUE, f"not serializable as JSON: {exc}") from None
        if self._normalizer is not None:
            try:
                self._normalizer.normalize(value, now)
            except Invalid as exc:
                raise ContractError(exc.reason, exc.detail) from None
        room_id = doc.get("room_id")
        return (room_id.encode() if isinstance(room_id, str) else None), value

    async def _enqueue(self, key: bytes | None, value: bytes) -> asyncio.Future[Any]:
        if self._renew:
            await self._renew_producer()
        epoch = self._epoch
        self._open[epoch] = self._open.get(epoch, 0) + 1
        try:
            await self._slots.acquire()
        except BaseException:
            self._settle(epoch)
            raise
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight
        try:
            future: asyncio.Future[Any] = await self._producer.send(self.topic, value, key=key)
        except BaseException as exc:
            self.in_flight -= 1
            self._slots.release()
            self._settle(epoch)
            if isinstance(exc, KafkaError):
                self.failed += 1
                self.last_error = exc
                self._failed_reported += 1
                raise DeliveryError(1, exc) from exc
            raise
        self.sent += 1
        self._pending[future] = epoch
        future.add_done_callback(self._delivered)
        if epoch < self._epoch and self._flush_waiters:
            # a send a flush() is waiting for, which reached the buffer after that flush expedited it.
            # Only these: closing batches on every send would starve other senders in aiokafka's
            # add_message() (it waits for the drain of a closed batch, then finds the next one closed).
            self._expedite()
        self._sends_since_yield += 1
        if self._sends_since_yield >= _YIELD_EVERY_SENDS:
            # aiokafka's send() does not yield while a batch has room, so one task sending in a loop could
            # fill every new batch before a task waiting for the previous one to drain runs again, and
            # starve it until its send timed out. Yielding now and then lets the waiting tasks in.
            self._sends_since_yield = 0
            await asyncio.sleep(0)
        return future

    def _on_delivery(self, future: asyncio.Future[Any]) -> None:
        epoch = self._pending.pop(future)
        self.in_flight -= 1
        self._slots.release()
        error = asyncio.CancelledError() if future.cancelled() else future.exception()
        if error is None:
            self.acked += 1
        else:
            if self.failed == self._failed_reported:
                log.warning("event delivery to %s failed: %r", self.topic, error)
            self.failed += 1
            self.last_error = error
            if self.idempotent and isinstance(error, BrokerResponseError):
                self._renew = True  # the next send() replaces the producer (see _renew_producer)
        self._settle(epoch)

    # --- flush bookkeeping ---------------------------------------------------------------------------
    def _settle(self, epoch: int) -> None:
        left = self._open[epoch] - 1
        if left:
            self._open[epoch] = left
            return
        del self._open[epoch]
        if self._flush_waiters:
            oldest_open = min(self._open, default=self._epoch + 1)
            still_waiting = []
            for target, waiter in self._flush_waiters:
                if target < oldest_open:
                    if not waiter.done():
                        waiter.set_result(None)
                else:
                    still_waiting.append((target, waiter))
            self._flush_waiters = still_waiting

    async def _wait_settled(self) -> None:
        target = self._epoch
        self._epoch += 1
        if not any(epoch <= target for epoch in self._open):
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (target, waiter)
        self._flush_waiters.append(entry)
        self._expedite()
        try:
            await waiter
        finally:
            if entry in self._flush_waiters:
                self._flush_waiters.remove(entry)

    def _expedite(self) -> None:
        """Send lingering batches now rather than after `linger_seconds`.

        aiokafka has no public call for this; it is what its own `flush_for_commit()` does (aiokafka
        <0.15, pinned in pyproject). If the internals move, flushing still works, only after the linger.
        """
        accumulator = getattr(self._producer, "_message_accumulator", None)
        if accumulator is None:
            return
        try:
            for batches in accumulator._batches.values():
                for batch in batches:
                    batch._builder.close()
            waiter = accumulator._waiter_future
            if not waiter.done():
                waiter.set_result(None)
        except AttributeError:
            return

    def _count_lost(self) -> None:
        """After the producer stopped: whatever it never settled is lost, and counted as failed."""
        for future in list(self._pending):
            future.remove_done_callback(self._delivered)
            del self._pending[future]
            self.in_flight -= 1
            self._slots.release()
            self.failed += 1
            self.last_error = RoomlogsError("producer stopped before the broker acknowledged the event")
        self._open.clear()

    def _raise_unreported(self) -> None:
        unreported = self.failed - self._failed_reported
        if unreported:
            self._failed_reported = self.failed
            raise DeliveryError(unreported, self.last_error)

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._producer is not None else "not started")
        return (
            f"RoomEventPublisher({self.topic!r} at {self.bootstrap}, {state}, sent={self.sent}, "
            f"acked={self.acked}, failed={self.failed}, in_flight={self.in_flight})"
        )
