"""How roomlogs connects to Kafka: one connection object, and one place that turns refusals into errors.

Every Kafka client of the package is built from one `KafkaConnection` (`KafkaConnection.of(settings)`):
the worker's consumer and producer, the admin client (topics, progress), the log probe, faust's own client
(`faust_credentials()`), the publisher SDK and `roomlogs simulate`. So a setting (TLS, SASL) means the
same thing everywhere, and no caller renames keyword arguments.

When the broker refuses us, aiokafka often says only "Unable to bootstrap"; `kafka_errors()` finds the
cause (untrusted certificate, wrong password, TLS to a plaintext port, missing ACL) and raises one error
whose message names the setting to fix, which the CLI prints as one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)

from pipeline.errors import ConfigurationError, RoomlogsError
from pipeline.settings import Settings

__all__ = [
    "KafkaAccessError",
    "KafkaConnection",
    "KafkaUnavailableError",
    "Refusal",
    "check_speaks_kafka",
    "find_refusal",
    "kafka_errors",
    "ssl_context",
]

log = logging.getLogger("roomlogs.kafka")

_PROBE_TIMEOUT_MS = 10_000
#: How long a server that took the connection has to answer a first Kafka request (ApiVersions, which
#: every broker answers at once) before it is named as not a Kafka broker.
SPEAKS_KAFKA_SECONDS = 5.0


class KafkaAccessError(ConfigurationError):
    """The broker refused us (certificate, credentials, protocol, ACL): a setting or an ACL must change."""


class KafkaUnavailableError(RoomlogsError):
    """No broker answered at the bootstrap address; it may be down or still starting."""

    retriable = True


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context of every Kafka client: verifies the broker (hostname included) against
    ROOMLOGS_KAFKA_SSL_CA_FILE, or the system's trust store when it is empty, and presents the client
    certificate when one is set."""
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=settings.kafka_ssl_ca_file or None
        )
    except (FileNotFoundError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"ROOMLOGS_KAFKA_SSL_CA_FILE={settings.kafka_ssl_ca_file!r} is not a readable PEM file of CA "
            f"certificates ({exc})"
        ) from None
    if settings.kafka_ssl_cert_file:
        try:
            context.load_cert_chain(
                settings.kafka_ssl_cert_file,
                settings.kafka_ssl_key_file,
                password=settings.kafka_ssl_key_password.get() or None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"cannot load the Kafka client certificate ROOMLOGS_KAFKA_SSL_CERT_FILE="
                f"{settings.kafka_ssl_cert_file!r} with ROOMLOGS_KAFKA_SSL_KEY_FILE and "
                f"ROOMLOGS_KAFKA_SSL_KEY_PASSWORD ({exc})"
            ) from None
    return context


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """How a client reaches Kafka: the bootstrap servers and the security every client of the package
    shares (the worker's consumer and producer, the admin client, the log probe, faust's client, the
    publisher SDK, `roomlogs simulate`). Built once from the settings (`KafkaConnection.of(settings)`), or
    by a room server embedding the SDK from its own configuration."""

    bootstrap: str
    #: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    security_protocol: str = "PLAINTEXT"
    #: TLS: which CAs to trust, and a client certificate (None: the system's trust store, or no TLS)
    ssl_context: ssl.SSLContext | None = None
    #: SASL: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, with a user and a password
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None

    @classmethod
    def of(cls, settings: Settings) -> KafkaConnection:
        """The connection ROOMLOGS_KAFKA_* describe (a ConfigurationError names a setting that cannot
        work, such as an unreadable CA file)."""
        protocol = settings.kafka_security_protocol
        sasl = protocol.startswith("SASL_")
        return cls(
            bootstrap=settings.kafka_bootstrap,
            security_protocol=protocol,
            ssl_context=ssl_context(settings) if protocol in ("SSL", "SASL_SSL") else None,
            sasl_mechanism=settings.kafka_sasl_mechanism if sasl else None,
            sasl_username=settings.kafka_sasl_username if sasl else None,
            sasl_password=settings.kafka_sasl_password.get() if sasl else None,
        )

    def security(self) -> dict[str, Any]:
        """aiokafka's security arguments (what every client takes besides `bootstrap_servers`)."""
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.ssl_context is not None:
            kwargs["ssl_context"] = self.ssl_context
        if self.security_protocol.startswith("SASL_"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        return kwargs

    def kwargs(self) -> dict[str, Any]:
        """Arguments for any aiokafka client (consumer, producer, admin)."""
        return {"bootstrap_servers": self.bootstrap, **self.security()}

    def faust_credentials(self) -> Any:
        """The same security for faust's own client (`broker_credentials`); None for PLAINTEXT."""
        from faust.auth import SASLCredentials, SSLCredentials

        if self.security_protocol == "SSL":
            return SSLCredentials(self.ssl_context)
        if self.security_protocol.startswith("SASL_"):
            # faust picks SASL_SSL when given a context, SASL_PLAINTEXT without one
            return SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password,
                mechanism=self.sasl_mechanism,
                ssl_context=self.ssl_context,
            )
        return None


@dataclass(frozen=True)
class Refusal:
    """Why a broker would not let a client connect, found by `find_refusal`."""

    server: str
    #: untrusted_certificate, tls_failed, authentication_failed, mechanism_unsupported, connection_closed
    cause: str
    detail: str


#: What to fix, per Refusal.cause, in the settings' words.
_SETTING_TO_FIX = {
    "untrusted_certificate": "set ROOMLOGS_KAFKA_SSL_CA_FILE to the CA that signed it",
    "tls_failed": "check ROOMLOGS_KAFKA_SECURITY_PROTOCOL (does that listener speak TLS?)",
    "authentication_failed": (
        "check ROOMLOGS_KAFKA_SASL_PASSWORD (and ROOMLOGS_KAFKA_SASL_USERNAME, ROOMLOGS_KAFKA_SASL_MECHANISM)"
    ),
    "mechanism_unsupported": "check ROOMLOGS_KAFKA_SASL_MECHANISM",
    "connection_closed": "check ROOMLOGS_KAFKA_SECURITY_PROTOCOL (that listener may require TLS or SASL)",
}


@contextlib.asynccontextmanager
async def kafka_errors(settings: Settings) -> AsyncIterator[None]:
    """Turn a refusal by the broker into KafkaAccessError / KafkaUnavailableError naming what to fix.

    Wrap the start of a client (and its first requests): ``async with kafka_errors(settings): await
    admin.start()``. Errors that are not about access pass through unchanged. Meanwhile aiokafka's own
    error log lines are held back: the error raised here explains them, in one line.
    """
    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        yield
    except KafkaConnectionError as exc:
        refusal = await find_refusal(settings.kafka_bootstrap, KafkaConnection.of(settings).security())
        if refusal is not None:
            raise KafkaAccessError(f"{refusal.detail}: {_SETTING_TO_FIX[refusal.cause]}") from None
        raise KafkaUnavailableError(
            f"no Kafka broker answered at ROOMLOGS_KAFKA_BOOTSTRAP={settings.kafka_bootstrap} ({exc})"
        ) from None
    except TopicAuthorizationFailedError as exc:
        raise KafkaAccessError(
            f"Kafka refused access to topic(s) {exc.args[0] if exc.args else ''} for {_who(settings)}: "
            "grant the ACLs listed in deploy/README.md, or check ROOMLOGS_KAFKA_SASL_USERNAME"
        ) from None
    except GroupAuthorizationFailedError:
        raise KafkaAccessError(
            f"Kafka refused access to consumer group {settings.consumer_group!r} for {_who(settings)}: "
            "grant READ on the group (see deploy/README.md), or check ROOMLOGS_CONSUMER_GROUP"
        ) from None
    except ClusterAuthorizationFailedError:
        raise KafkaAccessError(
            f"Kafka refused a cluster operation for {_who(settings)}: grant the ACLs listed in "
            "deploy/README.md, or check ROOMLOGS_KAFKA_SASL_USERNAME"
        ) from None
    finally:
        aiokafka_log.setLevel(level)


def _who(settings: Settings) -> str:
    if settings.kafka_security_protocol.startswith("SASL_"):
        return f"user {settings.kafka_sasl_username!r}"
    return "this client"


async def find_refusal(bootstrap: str, kwargs: dict[str, Any]) -> Refusal | None:
    """Connect to each bootstrap server once, directly, so the real cause of a failed start surfaces.

    `kwargs` are the client's security arguments (`KafkaConnection.security()`). None when
    no broker refused us explicitly (they may all be down).
    """
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(f"Kafka bootstrap {bootstrap!r}: use host:port[,host:port...]")
        try:
            conn = await create_conn(host, int(port), request_timeout_ms=_PROBE_TIMEOUT_MS, **kwargs)
        except ssl.SSLCertVerificationError as exc:
            return Refusal(
                server,
                "untrusted_certificate",
                f"the Kafka broker at {server} presented a certificate this client does not trust "
                f"({exc.verify_message})",
            )
        except ssl.SSLError as exc:
            return Refusal(
                server, "tls_failed", f"TLS with the Kafka broker at {server} failed ({exc.reason})"
            )
        except SaslAuthenticationFailed:
            user = kwargs.get("sasl_plain_username")
            return Refusal(
                server,
                "authentication_failed",
                f"the Kafka broker at {server} refused user {user!r} with {kwargs.get('sasl_mechanism')} "
                "(authentication failed)",
            )
        except UnsupportedSaslMechanismError:
            return Refusal(
                server,
                "mechanism_unsupported",
                f"the Kafka broker at {server} does not accept SASL mechanism {kwargs.get('sasl_mechanism')}",
            )
        except KafkaConnectionError:
            if kwargs.get("security_protocol", "PLAINTEXT") == "PLAINTEXT":
                # a TLS or SASL listener drops a plaintext client's first request without an answer
                return Refusal(
                    server, "connection_closed", f"the Kafka broker at {server} closed the connection"
                )
            continue
        except OSError:
            continue  # this one is down; another may answer
        conn.close()
    return None


async def check_speaks_kafka(settings: Settings, timeout_seconds: float = SPEAKS_KAFKA_SECONDS) -> None:
    """KafkaUnavailableError when no bootstrap server answers as a Kafka broker and one of them took the
    connection and said nothing Kafka understands within `timeout_seconds`: an HTTP port, PostgreSQL's, a
    TLS listener given as PLAINTEXT. Without this, the client's first request waits its whole request
    timeout (40 s) and more before "unable to bootstrap". A server that refuses the connection, or fails
    its TLS or SASL handshake, is left to `kafka_errors` (it says why)."""
    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)  # its "Authenticated as ..." and failures: said here, or later
    try:
        await _speaks_kafka(settings, timeout_seconds)
    finally:
        aiokafka_log.setLevel(level)


async def _speaks_kafka(settings: Settings, timeout_seconds: float) -> None:
    kwargs = KafkaConnection.of(settings).security()
    silent: list[str] = []
    for server in (s.strip() for s in settings.kafka_bootstrap.split(",")):
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(
                f"ROOMLOGS_KAFKA_BOOTSTRAP={settings.kafka_bootstrap!r}: use host:port[,host:port...]"
            )
        try:  # is anything listening at all?
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_seconds)
        except (OSError, TimeoutError) as exc:
            log.debug("no connection to %s: %r", server, exc)
            continue  # down: kafka_errors says so once the client gives up
        writer.close()
        timeout_ms = int(timeout_seconds * 1000)
        try:
            # aiokafka's connection asks ApiVersions first: connected is answered
            conn = await asyncio.wait_for(
                create_conn(host, int(port), request_timeout_ms=timeout_ms, **kwargs), timeout_seconds
            )
            conn.close()
        except (ssl.SSLError, SaslAuthenticationFailed, UnsupportedSaslMechanismError):
            return  # a refusal: kafka_errors names the setting to fix
        except (KafkaError, OSError, TimeoutError, ValueError, struct.error) as exc:
            log.debug("%s took the connection, no Kafka answer: %r", server, exc)
            silent.append(server)
        else:
            return  # a Kafka broker answered
    if silent:
        raise KafkaUnavailableError(
            f"ROOMLOGS_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}: {', '.join(silent)} took the connection "
            f"but did not answer as a Kafka broker within {timeout_seconds:g} s: is that the broker's port "
            "(not, say, its metrics, the API or PostgreSQL), and does its listener speak "
            f"{settings.kafka_security_protocol} (ROOMLOGS_KAFKA_SECURITY_PROTOCOL)?"
        )
