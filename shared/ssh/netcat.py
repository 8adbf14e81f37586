"""Netcat mode: the agent's answers come over a plain TCP connection instead of SSH.

The worker listens on the first free port of a range; the host runs
`python3 -c SCRIPT TOKEN | nc ADDRESS PORT` and the agent writes the random token first.
The worker takes the one connection that comes from the host's address and starts with the
token: any other connection is closed. The data is not encrypted: use it on a trusted
storage/backup network only.

`nc ADDRESS PORT` is all that is asked of netcat (OpenBSD nc and nmap-ncat both do it). As
OpenBSD nc without -N stays connected after its input ends, the remote command kills its own
process group when the agent exits, so that the worker sees the stream end.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import secrets
import selectors
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from shared.errors import ConfigError, ServiceError

TOKEN_BYTES = 16
ACCEPT_TIMEOUT_S = 20.0
POLL_S = 0.1
RECEIVE_BUFFER = 4 * 1024 * 1024
MAX_CANDIDATES = 16
NO_NETCAT = "drover: nc: not found"
NO_NETCAT_STATUS = 127
QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only


@dataclass(frozen=True)
class NetcatOptions:
    ports: tuple[int, int]  # first and last port the worker may listen on, both included
    bind_address: str = ""  # default: the worker's address on the SSH connection
    accept_timeout_s: float = ACCEPT_TIMEOUT_S

    def __post_init__(self) -> None:
        low, high = self.ports
        if not 0 < low <= high < 65536:
            raise ConfigError(
                f"the netcat port range {low}-{high} is not valid",
                hint="give the first and the last port, between 1 and 65535",
            )
        if self.bind_address:
            try:
                _ip(self.bind_address)
            except ValueError as e:
                raise ConfigError(
                    f"the netcat bind address {self.bind_address!r} is not an IP address",
                    hint="give the worker's IP address on the network the hosts reach it by",
                ) from e


class NoFreePort(ServiceError):
    """Every port of the netcat range is taken (other transfers hold them)."""


class NetcatConnectFailed(ConfigError):
    """The host did not connect back to the worker in time."""


def new_token() -> bytes:
    return secrets.token_bytes(TOKEN_BYTES)


def remote_command(script: str, token: bytes, address: str, port: int) -> str:
    """The shell command for the host; `kill 0` ends nc (and the rest) once the agent exits."""
    body = (
        f'command -v nc >/dev/null || {{ echo "{NO_NETCAT}" >&2; exit {NO_NETCAT_STATUS}; }}\n'
        '{ python3 -c "$0" "$1"; kill 0; } | nc "$2" "$3"'
    )
    args = ["sh", "-c", body, script, token.hex(), address, str(port)]
    return shlex.join(args)


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class SocketStream:
    """The agent's frames on the accepted TCP connection."""

    def __init__(self, sock: socket.socket, timeout_s: float) -> None:
        sock.settimeout(timeout_s)
        self._sock = sock

    def recv_into(self, view: memoryview) -> int:
        if QUICKACK is not None:
            # ack at once: nc's last short segment of an answer otherwise waits for our
            # delayed ACK (Nagle on its side), some ms per request
            self._sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
        return self._sock.recv_into(view)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


class Rendezvous:
    """A listening socket waiting for the host's nc; a context manager that closes it."""

    def __init__(self, host: str, options: NetcatOptions, local: str, peer: str) -> None:
        self.host = host
        bind = options.bind_address or local
        self.address = local if _ip(bind).is_unspecified else bind
        self.token = new_token()
        self._expected = _ip(peer)
        self._timeout_s = options.accept_timeout_s
        self._listener = _listen(host, bind, options.ports)
        self.port = int(self._listener.getsockname()[1])
        self._candidates: dict[socket.socket, bytearray] = {}

    def accept(self, abandoned: Callable[[], bool]) -> socket.socket:
        """The host's connection, its token read; `abandoned()` true stops the wait."""
        deadline = time.monotonic() + self._timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            while time.monotonic() < deadline and not abandoned():
                for key, _ in selector.select(POLL_S):
                    found = self._ready(selector, key.fileobj)
                    if found is not None:
                        return found
        raise NetcatConnectFailed(
            f"host {self.host} did not connect to {self.address}:{self.port} "
            f"within {self._timeout_s:g}s",
            hint="let the host reach the worker on the netcat ports (firewall), "
            "or turn the netcat option off",
        )

    def _ready(
        self, selector: selectors.BaseSelector, ready: object
    ) -> socket.socket | None:
        if ready is self._listener:
            conn = self._accept_one()
            if conn is not None:
                selector.register(conn, selectors.EVENT_READ)
            return None
        if not isinstance(ready, socket.socket) or ready not in self._candidates:
            return None
        found = self._check(ready)
        if ready not in self._candidates:
            selector.unregister(ready)
        return found

    def _accept_one(self) -> socket.socket | None:
        try:
            conn, addr = self._listener.accept()
        except OSError:
            return None
        if _ip(str(addr[0])) != self._expected or len(self._candidates) >= MAX_CANDIDATES:
            conn.close()  # not the host: a stray connection
            return None
        conn.setblocking(False)
        self._candidates[conn] = bytearray()
        return conn

    def _check(self, conn: socket.socket) -> socket.socket | None:
        """Read some of the token; the connection once all of it is there and right."""
        got = self._candidates[conn]
        try:
            data = conn.recv(TOKEN_BYTES - len(got))
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        got += data
        if data and len(got) < TOKEN_BYTES:
            return None  # decide on the whole token only: no oracle for a prefix
        del self._candidates[conn]
        if data and hmac.compare_digest(bytes(got), self.token):
            conn.setblocking(True)
            return conn
        conn.close()
        return None

    def close(self) -> None:
        for conn in self._candidates:
            conn.close()
        self._candidates.clear()
        self._listener.close()

    def __enter__(self) -> Rendezvous:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _listen(host: str, address: str, ports: tuple[int, int]) -> socket.socket:
    family = socket.AF_INET6 if _ip(address).version == 6 else socket.AF_INET
    for port in range(ports[0], ports[1] + 1):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        try:
            sock.bind((address, port))
            sock.listen(8)
        except OSError:
            sock.close()
            continue
        return sock
    raise NoFreePort(
        f"no free port in {ports[0]}-{ports[1]} on {address} for netcat from host {host}",
        hint="widen the netcat port range or run fewer transfers at once on this worker",
    )
