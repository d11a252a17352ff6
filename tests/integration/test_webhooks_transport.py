"""The SSRF-guarded HTTP client over real TLS on 127.0.0.1: the connection goes to the address the guard
checked, while SNI, certificate verification and the Host header keep the URL's host name. No database
or Kafka needed (a local TLS server with a certificate made here)."""

from __future__ import annotations

import ipaddress
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.segmentation.ssrf import BlockedAddress, Guard, IPAddress, delivery_client

pytestmark = pytest.mark.integration

HOST = "hooks.example.test"


def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for HOST (its own trust anchor)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class TLSReceiver:
    def __init__(self, cert: Path, key: Path) -> None:
        self.server_names: list[str | None] = []
        self.hosts: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.hosts.append(self.headers.get("host", ""))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)

        def sni(_socket: Any, server_name: str | None, _context: Any) -> None:
            receiver.server_names.append(server_name)

        context.sni_callback = sni
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[tuple[TLSReceiver, ssl.SSLContext]]:
    cert, key = certificate(tmp_path)
    receiver = TLSReceiver(cert, key)
    trust = ssl.create_default_context(cafile=str(cert))
    yield receiver, trust
    receiver.stop()


def resolver(names: dict[str, list[str]]) -> Any:
    def resolve(host: str, port: int) -> list[IPAddress]:
        if host not in names:
            raise OSError("no such host")
        return [ipaddress.ip_address(a) for a in names[host]]

    return resolve


def test_https_goes_to_the_checked_address_with_the_urls_host_name(
    tls: tuple[TLSReceiver, ssl.SSLContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver, trust = tls
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # ignored: a proxy would connect unchecked
    guard = Guard(allow_private=True, resolver=resolver({HOST: ["127.0.0.1"]}))
    with delivery_client(guard, timeout_s=5, verify=trust) as client:
        response = client.post(f"https://{HOST}:{receiver.port}/hook", content=b"{}")
    assert response.status_code == 200
    assert receiver.server_names == [HOST]  # SNI: the URL's host
    assert receiver.hosts == [f"{HOST}:{receiver.port}"]  # Host header: the URL's host


def test_the_certificate_is_still_verified_against_the_urls_host(
    tls: tuple[TLSReceiver, ssl.SSLContext],
) -> None:
    receiver, trust = tls
    guard = Guard(allow_private=True, resolver=resolver({"other.example.test": ["127.0.0.1"]}))
    with delivery_client(guard, timeout_s=5, verify=trust) as client, pytest.raises(httpx.ConnectError):
        client.post(f"https://other.example.test:{receiver.port}/hook", content=b"{}")
    with delivery_client(guard, timeout_s=5) as client, pytest.raises(httpx.ConnectError):
        client.post(f"https://other.example.test:{receiver.port}/hook", content=b"{}")  # untrusted
    assert receiver.hosts == []


def test_a_blocked_address_is_never_connected_to(tls: tuple[TLSReceiver, ssl.SSLContext]) -> None:
    receiver, trust = tls
    for addresses in (["127.0.0.1"], ["93.184.215.14", "127.0.0.1"]):
        guard = Guard(allow_private=False, resolver=resolver({HOST: addresses}))
        with (
            delivery_client(guard, timeout_s=5, verify=trust) as client,
            pytest.raises(httpx.ConnectError) as refused,
        ):
            client.post(f"https://{HOST}:{receiver.port}/hook", content=b"{}")
        assert isinstance(refused.value.__cause__, BlockedAddress)
        assert refused.value.__cause__.reason == "loopback"
    assert receiver.server_names == []  # not even a TLS handshake
