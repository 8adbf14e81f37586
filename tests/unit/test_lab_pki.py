"""The lab CA: certs verify with Python ssl and pycurl, SANs include localhost/127.0.0.1."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from lab.pki import CertificateAuthority


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path / "pki")


@pytest.fixture
def https_port(ca: CertificateAuthority) -> Iterator[int]:
    cert, key = ca.issue("server", ["host1.lab.local", "10.0.0.7"])
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_issue_sans(ca: CertificateAuthority) -> None:
    cert_file, key_file = ca.issue("h1", ["host1.lab.local", "10.0.0.7"])
    assert key_file.stat().st_mode & 0o077 == 0
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"host1.lab.local", "localhost"}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {
        "10.0.0.7", "127.0.0.1"}
    assert ca.ca_file.exists()


def test_python_ssl_verifies(ca: CertificateAuthority, https_port: int) -> None:
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    for host in ("localhost", "127.0.0.1"):
        import http.client

        conn = http.client.HTTPSConnection(host, https_port, context=context, timeout=5)
        conn.request("HEAD", "/")
        assert conn.getresponse().status in (200, 404)
        conn.close()


def test_pycurl_verifies(ca: CertificateAuthority, https_port: int) -> None:
    pycurl = pytest.importorskip("pycurl")
    curl = pycurl.Curl()
    try:
        curl.setopt(pycurl.URL, f"https://127.0.0.1:{https_port}/")
        curl.setopt(pycurl.CAINFO, str(ca.ca_file))
        curl.setopt(pycurl.NOBODY, True)
        curl.perform()
        assert curl.getinfo(pycurl.RESPONSE_CODE) in (200, 404)
    finally:
        curl.close()


def test_load_roundtrip(ca: CertificateAuthority) -> None:
    loaded = CertificateAuthority.load(ca.directory)
    assert loaded.ca_file == ca.ca_file
    cert_file, _ = loaded.issue("again", [])
    assert cert_file.exists()
