"""TLS to PostgreSQL: the worker's and the API's connections verify the server (sslmode=verify-full).

A second PostgreSQL (Debian's server: the embedded wheel's is built without OpenSSL), with a certificate
from the test's own CA. roomlogs needs no setting of its
own for this: the DSN carries ``sslmode=verify-full&sslrootcert=CA.pem`` (README, Configuration).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tls_support import Certificates, make_certificates

from pipeline.api.app import open_pool
from pipeline.api.settings import ApiSettings
from pipeline.cli.devstack import WORKER_COMMAND, worker_env
from pipeline.errors import ConfigurationError
from pipeline.kafka_topics import ensure_topics
from pipeline.settings import Secret, Settings
from pipeline.stack import EmbeddedPostgres, PostgresTls
from pipeline.stack.postgres import system_postgres_bin_dir
from pipeline.storage import db

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("pg-certs"))


@pytest.fixture(scope="module")
def tls_postgres(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates
) -> Iterator[EmbeddedPostgres]:
    bin_dir = system_postgres_bin_dir()
    if bin_dir is None:  # `make test` installs Debian's postgresql (the wheel's server has no TLS)
        message = "TLS to PostgreSQL needs Debian's postgresql package (the embedded wheel has no OpenSSL)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    tls = PostgresTls(certificates.server_cert_file, certificates.server_key_file)
    with EmbeddedPostgres(tmp_path_factory.mktemp("pg-tls"), fast=True, tls=tls, bin_dir=bin_dir) as server:
        yield server


def verified(dsn: str, ca_file: Path) -> str:
    return f"{dsn}?sslmode=verify-full&sslrootcert={ca_file}"


async def test_the_worker_connection_is_encrypted_and_verified(
    tls_postgres: EmbeddedPostgres, certificates: Certificates
) -> None:
    conn = await db.connect(verified(tls_postgres.dsn, certificates.ca_file), "public")
    try:
        row = await conn.fetchrow("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    finally:
        await conn.close()
    assert row is not None and row["ssl"] is True and row["version"].startswith("TLS")


def test_migrate_over_verified_tls_and_the_api_reads_over_it(
    tls_postgres: EmbeddedPostgres, certificates: Certificates
) -> None:
    dsn = verified(tls_postgres.dsn, certificates.ca_file)
    settings = Settings(postgres_dsn=Secret(dsn), postgres_schema="tls_app")
    done = subprocess.run(
        [*WORKER_COMMAND[:-1], "migrate"], env=worker_env(settings), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    async def api_pool_reads() -> int:
        api = ApiSettings(postgres_dsn=Secret(dsn), allow_privileged_db_role=True)
        pool = await open_pool(api, "tls_app")
        try:
            async with pool.acquire() as conn:
                return int(await conn.fetchval("SELECT count(*) FROM events"))
        finally:
            await pool.close()

    assert asyncio.run(api_pool_reads()) == 0


async def test_an_untrusted_server_certificate_is_refused_by_the_worker_and_the_api(
    tls_postgres: EmbeddedPostgres, certificates: Certificates, kafka_bootstrap: str
) -> None:
    untrusted = verified(tls_postgres.dsn, certificates.stranger_ca_file)
    settings = Settings(kafka_bootstrap=kafka_bootstrap, postgres_dsn=Secret(untrusted))
    await ensure_topics(settings)  # so the worker has nothing to create (and to log) before PostgreSQL
    done = await asyncio.to_thread(
        subprocess.run,
        [*WORKER_COMMAND], env=worker_env(settings), capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert "ROOMLOGS_POSTGRES_DSN" in lines[0] and "sslrootcert" in lines[0]

    with pytest.raises(ConfigurationError, match="certificate verify failed"):
        await open_pool(ApiSettings(postgres_dsn=Secret(untrusted)), "tls_app")
