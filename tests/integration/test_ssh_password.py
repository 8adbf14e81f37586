"""A host registered with a password instead of a key: the login over a real SSH handshake.

The lab's sshd takes keys only (its user is the CI machine's root), so the peer here is an
SSH server built on paramiko's server side, on a free loopback port, accepting one password.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import paramiko
import pytest

from shared.ssh.access import HostAccess
from shared.ssh.session import HostAuthFailed, HostSession

PASSWORD = "correct horse battery staple"
pytestmark = pytest.mark.integration


class PasswordOnly(paramiko.ServerInterface):
    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        ok = username == "backup" and password == PASSWORD
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED


@pytest.fixture
def server() -> Iterator[tuple[int, str]]:
    key = paramiko.ECDSAKey.generate()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    transports: list[paramiko.Transport] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(key)
            transport.start_server(server=PasswordOnly())
            transports.append(transport)

    threading.Thread(target=serve, daemon=True).start()
    yield port, f"{key.get_name()} {key.get_base64()}"
    listener.close()
    for transport in transports:
        transport.close()


def access(port: int, pin: str, password: str) -> HostAccess:
    return HostAccess(
        "host9", "127.0.0.1", port=port, user="backup", host_key=pin, password=password
    )


def test_a_password_logs_in(server: tuple[int, str]) -> None:
    port, pin = server
    with HostSession(access(port, pin, PASSWORD)) as session:
        assert session.peer_address == "127.0.0.1"


def test_a_wrong_password_is_refused_naming_the_host(server: tuple[int, str]) -> None:
    port, pin = server
    with pytest.raises(HostAuthFailed, match="host host9") as refused:
        HostSession(access(port, pin, "guess"))
    assert "guess" not in str(refused.value)
