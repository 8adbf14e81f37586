"""`HostSession`: one paramiko SSH connection to a hypervisor, tuned for bulk reads.

The host key must match the pin (`shared.ssh_trust`): no known_hosts file, no agent, no
keys from ~/.ssh. Errors name the host: `HostUnreachable` (retryable: refused, timed out,
the SSH handshake broke), `HostAuthFailed` (a ConfigError: the key or password was refused),
`HostKeyRefused` (a ConfigError: no pin, or another key), `RemoteCommandFailed`.
"""

from __future__ import annotations

import selectors
import shlex
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType

import paramiko

from shared.errors import ConfigError, DroverError, ServiceError
from shared.ssh.access import HostAccess
from shared.ssh.agent import ChannelStream, ConnectionDropped, DataStream, RemoteAgent
from shared.ssh.agent_script import AGENT_SCRIPT
from shared.ssh.netcat import (
    NO_NETCAT,
    NetcatOptions,
    Rendezvous,
    SocketStream,
    remote_command,
)
from shared.ssh_trust import PinnedHostKey

WINDOW_SIZE = 64 * 1024 * 1024
MAX_PACKET_SIZE = 256 * 1024
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes128-ctr", "aes256-gcm@openssh.com")
KEEPALIVE_S = 30
KEEPALIVE_TCP = {"TCP_KEEPIDLE": 60, "TCP_KEEPINTVL": 15, "TCP_KEEPCNT": 4}
AGENT_TIMEOUT_S = 120.0
STDERR_TAIL = 500


class HostUnreachable(ServiceError):
    """No SSH session to the host: refused, timed out, or the handshake broke."""


class HostAuthFailed(ConfigError):
    """The host refused the key or the password: it will until the settings change."""


class RemoteCommandFailed(DroverError):
    """A command on the host exited non-zero (or could not start)."""

    def __init__(
        self, host: str, command: str, status: int, stderr: str, *, hint: str = ""
    ) -> None:
        tail = stderr.strip()[-STDERR_TAIL:]
        super().__init__(
            f"`{_short(command)}` exited with status {status} on host {host}: "
            f"{tail or 'no error output'}",
            hint=hint,
        )
        self.host = host
        self.command = command
        self.status = status
        self.stderr = stderr


def _short(command: str, limit: int = 200) -> str:
    return command if len(command) <= limit else command[:limit] + "..."


def _transport(
    sock: socket.socket | str | tuple[str, int] | paramiko.Channel | paramiko.ProxyCommand,
    /,
    *,
    gss_kex: bool = False,
    gss_deleg_creds: bool = True,
    disabled_algorithms: Mapping[str, Iterable[str]] | None = None,
) -> paramiko.Transport:
    """A transport with a wide window and large packets, preferring the fastest ciphers."""
    transport = paramiko.Transport(
        sock,
        default_window_size=WINDOW_SIZE,
        default_max_packet_size=MAX_PACKET_SIZE,
        disabled_algorithms=disabled_algorithms,
    )
    options = transport.get_security_options()
    known = list(options.ciphers)
    fast = [c for c in FAST_CIPHERS if c in known]
    options.ciphers = [*fast, *(c for c in known if c not in fast)]
    return transport


def _connect_socket(access: HostAccess, timeout_s: float) -> socket.socket:
    try:
        sock = socket.create_connection((access.address, access.port), timeout=timeout_s)
    except OSError as e:
        raise HostUnreachable(
            f"cannot connect to {access.where}: {e.strerror or e}",
            hint="check the host's address and that sshd runs and is reachable",
        ) from e
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in KEEPALIVE_TCP.items():
        if hasattr(socket, option):  # Linux: a dead peer is noticed in minutes, not hours
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class HostSession:
    """An authenticated SSH connection to one host; a context manager that closes it."""

    def __init__(self, access: HostAccess, *, timeout_s: float = 30) -> None:
        self.access = access
        self.timeout_s = timeout_s
        self._agents: list[RemoteAgent] = []
        self._lock = threading.Lock()
        pkey = access.pkey()
        if pkey is None and not access.password:
            raise ConfigError(
                f"no private key and no password for {access.where}",
                hint="set the SSH private key (or a password) of the host",
            )
        sock = _connect_socket(access, timeout_s)
        self._local, self._peer = str(sock.getsockname()[0]), str(sock.getpeername()[0])
        self._client = paramiko.SSHClient()
        self._client.set_missing_host_key_policy(PinnedHostKey(access.host_key, access.where))
        try:
            self._login(sock, pkey)
        except BaseException:
            self._client.close()
            sock.close()
            raise
        self._active_transport().set_keepalive(KEEPALIVE_S)

    def _login(self, sock: socket.socket, pkey: paramiko.PKey | None) -> None:
        access = self.access
        try:
            self._client.connect(
                access.address,
                port=access.port,
                username=access.user,
                pkey=pkey,
                password=None if pkey is not None else access.password,
                sock=sock,
                timeout=self.timeout_s,
                banner_timeout=self.timeout_s,
                auth_timeout=self.timeout_s,
                look_for_keys=False,
                allow_agent=False,
                transport_factory=_transport,
            )
        except paramiko.AuthenticationException as e:
            raise HostAuthFailed(
                f"{access.where} refused the login of {access.user}: {e}",
                hint="check the SSH user and its key (authorized_keys on the host) or password",
            ) from e
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise HostUnreachable(
                f"no SSH session with {access.where}: {e}",
                hint="check that sshd runs on the host and accepts the worker",
            ) from e

    def _active_transport(self) -> paramiko.Transport:
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise HostUnreachable(f"the SSH session with {self.access.where} closed")
        return transport

    @property
    def local_address(self) -> str:
        """The worker's address on this connection (what the host sees connecting)."""
        return self._local

    @property
    def peer_address(self) -> str:
        """The host's address on this connection, resolved."""
        return self._peer

    # commands

    def _exec(self, command: str, timeout_s: float) -> paramiko.Channel:
        try:
            channel = self._active_transport().open_session(timeout=self.timeout_s)
            channel.settimeout(timeout_s)
            channel.exec_command(command)
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise HostUnreachable(
                f"cannot run a command on {self.access.where}: {e}",
                hint="the SSH session broke; retry",
            ) from e
        return channel

    def run(self, argv: Sequence[str], *, timeout_s: float = 300) -> str:
        """Run `argv` (each word quoted) on the host; its stdout. Non-zero exit: raises."""
        command = shlex.join(argv)
        channel = self._exec(command, timeout_s)
        try:
            out, err = _collect(channel, time.monotonic() + timeout_s)
            if out is None:
                raise RemoteCommandFailed(
                    self.access.name, command, -1, f"timed out after {timeout_s:g}s",
                    hint="the command did not finish in time",
                )
            status = channel.recv_exit_status()
        finally:
            channel.close()
        if status != 0:
            raise RemoteCommandFailed(self.access.name, command, status, err)
        return out

    # agents

    def agent(
        self, netcat: NetcatOptions | None = None, *, timeout_s: float = AGENT_TIMEOUT_S
    ) -> RemoteAgent:
        """Start one agent process on the host; `timeout_s` is how long a request may stall."""
        if netcat is None:
            channel = self._exec(shlex.join(["python3", "-c", AGENT_SCRIPT]), timeout_s)
            agent = self._handshake(channel, ChannelStream(channel), timeout_s)
        else:
            agent = self._netcat_agent(netcat, timeout_s)
        with self._lock:  # a pool may start agents from several threads
            self._agents = [a for a in self._agents if not a.closed] + [agent]
        return agent

    def _netcat_agent(self, options: NetcatOptions, timeout_s: float) -> RemoteAgent:
        name = self.access.name
        with Rendezvous(name, options, self.local_address, self.peer_address) as meeting:
            command = remote_command(AGENT_SCRIPT, meeting.token, meeting.address, meeting.port)
            channel = self._exec(command, timeout_s)
            try:
                conn = meeting.accept(lambda: channel.exit_status_ready() or channel.closed)
            except DroverError:
                if channel.exit_status_ready() or channel.closed:
                    raise self._start_failed(channel, "python3 | nc") from None
                channel.close()
                raise
        return self._handshake(channel, SocketStream(conn, timeout_s), timeout_s)

    def _handshake(
        self, channel: paramiko.Channel, stream: DataStream, timeout_s: float
    ) -> RemoteAgent:
        try:
            return RemoteAgent(self.access.name, channel, stream, timeout_s=timeout_s)
        except ConnectionDropped as e:
            stream.close()
            failure = self._start_failed(channel, "python3 -c AGENT", e.stderr)
            if failure.status == -1:  # no exit status: the session itself went away
                raise HostUnreachable(
                    f"the SSH session with {self.access.where} dropped as an agent started",
                    hint="retry",
                ) from e
            raise failure from e

    def _start_failed(
        self, channel: paramiko.Channel, command: str, stderr: str = ""
    ) -> RemoteCommandFailed:
        _, rest = _collect(channel, time.monotonic() + 2)
        err = stderr + rest
        status = channel.recv_exit_status() if channel.exit_status_ready() else -1
        channel.close()
        if NO_NETCAT in err:
            hint = "install netcat (nc) or turn the netcat option off"
        elif "nc" in command:
            hint = (
                "the host's nc must reach the worker on the netcat ports (firewall?) and "
                "python3 must be on the host's PATH; or turn the netcat option off"
            )
        else:
            hint = "the agent needs python3 on the host's PATH (vdsm hosts have it)"
        return RemoteCommandFailed(self.access.name, command, status, err, hint=hint)

    # life cycle

    def close(self) -> None:
        with self._lock:
            agents, self._agents = self._agents, []
        for agent in agents:
            agent.close()
        self._client.close()

    def __enter__(self) -> HostSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _collect(channel: paramiko.Channel, deadline: float) -> tuple[str | None, str]:
    """Stdout and stderr until the command ends; stdout None if `deadline` passes first."""
    out, err = bytearray(), bytearray()
    while True:
        ended = channel.eof_received or channel.closed  # before reading: nothing comes after
        while channel.recv_ready():
            out += channel.recv(1 << 20)
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(1 << 20)
        if ended:
            return out.decode(errors="replace"), err.decode(errors="replace")
        left = deadline - time.monotonic()
        if left <= 0:
            return None, err.decode(errors="replace")
        _wait_readable(channel, min(left, 1.0))


def _wait_readable(channel: paramiko.Channel, timeout_s: float) -> None:
    """Until the channel has output or closes (epoll: no FD_SETSIZE limit as with select)."""
    with selectors.DefaultSelector() as selector:
        selector.register(channel.fileno(), selectors.EVENT_READ)
        selector.select(timeout_s)
