"""Certificates made by the tests: a CA, a server certificate for 127.0.0.1/localhost, and a stranger CA.

The Apache Kafka cluster's secured listener reads the server key and chain from a PKCS#12 keystore; the
embedded PostgreSQL reads the PEM files. Clients trust `ca_file`; `stranger_ca_file` signed nothing here
(a client trusting only it must refuse the servers).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

KEYSTORE_PASSWORD = "keystorepass"


@dataclass(frozen=True)
class Certificates:
    ca_file: Path
    stranger_ca_file: Path
    server_cert_file: Path
    server_key_file: Path
    #: PKCS#12: the server key and its chain, protected by `keystore_password`.
    server_keystore: Path
    keystore_password: str = KEYSTORE_PASSWORD


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str, now: datetime.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return key, cert


def make_certificates(directory: Path) -> Certificates:
    """Write a CA, a server certificate it signed (127.0.0.1, localhost) and an unrelated CA."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca_cert = _ca("roomlogs test CA", now)
    _, stranger_cert = _ca("some other CA", now)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = Certificates(
        ca_file=directory / "ca.pem",
        stranger_ca_file=directory / "stranger-ca.pem",
        server_cert_file=directory / "server.pem",
        server_key_file=directory / "server.key",
        server_keystore=directory / "server.p12",
    )
    paths.ca_file.write_bytes(ca_cert.public_bytes(pem))
    paths.stranger_ca_file.write_bytes(stranger_cert.public_bytes(pem))
    paths.server_cert_file.write_bytes(server_cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    paths.server_key_file.write_bytes(
        server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    paths.server_key_file.chmod(0o600)
    paths.server_keystore.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"server",
            server_key,
            server_cert,
            [ca_cert],
            serialization.BestAvailableEncryption(KEYSTORE_PASSWORD.encode()),
        )
    )
    return paths
