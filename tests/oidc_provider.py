"""A real OpenID Connect provider for the single sign-on tests: no.nav.security:mock-oauth2-server.

`make oidc-provider` copies it and its runtime dependencies from Maven Central (deploy/oidc/pom.xml) into
~/.cache/roomlogs/mock-oauth2-server-VERSION/libs; `OidcProvider` runs its standalone server on a free
port with a signing key of the test's choosing, RSA (RS256) or P-256 (ES256) (restart with another key: a
key rotation), and interactive login on, so a test signs in as anyone, with any claims, by posting the
provider's login form.
Without Java or the jars the tests are skipped, except under CI=true: there a provider that cannot start
is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

REPO = Path(__file__).resolve().parents[1]
VERSION = re.search(
    r"<mock-oauth2-server.version>(.+)</mock-oauth2-server.version>",
    (REPO / "deploy" / "oidc" / "pom.xml").read_text(encoding="utf-8"),
).group(1)  # type: ignore[union-attr]
LIBS = Path.home() / ".cache" / "roomlogs" / f"mock-oauth2-server-{VERSION}" / "libs"
MAIN_CLASS = "no.nav.security.mock.oauth2.StandaloneMockOAuth2ServerKt"
ISSUER_ID = "default"


def rsa_jwk() -> tuple[rsa.RSAPrivateKey, dict[str, str]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key))
    return key, {**jwk, "alg": "RS256", "use": "sig", "kid": ISSUER_ID}


def ec_jwk() -> tuple[ec.EllipticCurvePrivateKey, dict[str, str]]:
    """A P-256 key (ES256) and its private JWK, under the key id the provider signs with."""
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(key))
    return key, {**jwk, "alg": "ES256", "use": "sig", "kid": ISSUER_ID}


class OidcProvider:
    def __init__(self, work_dir: Path, algorithm: str = "RS256") -> None:
        """`algorithm`: what the provider signs ID tokens with, RS256 or ES256 (its only key, either way)."""
        self.work_dir = work_dir
        self.algorithm = algorithm
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ISSUER_ID}"

    def start(self) -> None:
        """Start with a new signing key (a restart is a key rotation)."""
        java = shutil.which("java")
        if java is None or not any(LIBS.glob("mock-oauth2-server-*.jar")):
            message = f"no Java or no {LIBS} (run `make oidc-provider`)"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        _, jwk = ec_jwk() if self.algorithm == "ES256" else rsa_jwk()
        config = {
            "interactiveLogin": True,
            "httpServer": "NettyWrapper",
            "tokenProvider": {"keyProvider": {"initialKeys": json.dumps(jwk), "algorithm": self.algorithm}},
        }
        env = {**os.environ, "SERVER_PORT": str(self.port), "JSON_CONFIG": json.dumps(config)}
        with (self.work_dir / "oidc-provider.log").open("ab") as log:
            self.process = subprocess.Popen(
                [java, "-Xmx256m", "-cp", str(LIBS / "*"), MAIN_CLASS], env=env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the OIDC provider exited; see {self.work_dir / 'oidc-provider.log'}")
            try:
                if httpx.get(self.issuer + "/.well-known/openid-configuration", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail(f"the OIDC provider did not start in 60 s; see {self.work_dir / 'oidc-provider.log'}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_in(self, authorization_url: str, username: str, claims: dict[str, object]) -> str:
        """Post the provider's login form as `username` with `claims`; the redirect back (with the code)."""
        answer = httpx.post(
            authorization_url, data={"username": username, "claims": json.dumps(claims)}, timeout=10
        )
        assert answer.status_code == 302, answer.text
        return answer.headers["location"]
