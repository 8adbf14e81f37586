"""A private RabbitMQ on free ports, for tests that run the fleet with an AMQP broker.

It never touches a RabbitMQ the machine runs as a service: its own node name, ports, Erlang
port mapper (epmd), cookie (HOME), mnesia and log directories, and its own (empty) env,
config and plugins files, so /etc/rabbitmq is not read. Everything it starts (epmd, the
Erlang VM and its helpers) is a managed process of `lab.procs`, stopped whole.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab import procs
from shared.errors import ServiceError

START_TIMEOUT_S = 90.0  # the Erlang VM and RabbitMQ's boot steps, on a busy 2-core machine
STOP_GRACE_S = 30.0
# The Debian package's /usr/sbin/rabbitmq-server switches to the rabbitmq user and logs to
# /var/log/rabbitmq; the script it wraps runs as whoever calls it, with the environment given.
PACKAGED_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"


def rabbitmq_executable() -> str | None:
    """The rabbitmq-server script to run, or None when RabbitMQ is not installed."""
    if PACKAGED_SCRIPT.exists():
        return str(PACKAGED_SCRIPT)
    return shutil.which("rabbitmq-server")


class RabbitMQServer:
    """rabbitmq-server with its state in `directory`, AMQP on a free loopback port.

    `url` is an amqp:// URL for the default guest user (allowed from loopback only).
    """

    def __init__(self, directory: Path) -> None:
        executable = rabbitmq_executable()
        if executable is None:
            raise ServiceError("rabbitmq-server is not installed", hint="run `make setup`")
        epmd = shutil.which("epmd")
        if epmd is None:
            raise ServiceError("epmd (Erlang) is not installed", hint="run `make setup`")
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = procs.free_port()
        self.dist_port = _another_free_port(self.port)
        self.epmd_port = _another_free_port(self.port, self.dist_port)
        self.node = f"drover-test-{self.port}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self._executable = executable
        self._epmd = epmd
        self._env = self._write_files()
        self._processes: list[procs.ManagedProcess] = []

    def _write_files(self) -> dict[str, str]:
        d = self.directory
        for sub in ("mnesia", "log", "home"):
            (d / sub).mkdir(exist_ok=True)
        (d / "rabbitmq-env.conf").write_text("# empty: the environment below says it all\n")
        (d / "enabled_plugins").write_text("[].\n")  # no management or other plugins
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"
            "log.console = true\n"
            "log.console.level = info\n"
            "log.file.level = info\n"
            # a small test machine: don't block publishers over free disk or memory
            "disk_free_limit.absolute = 10MB\n"
            "vm_memory_high_watermark.relative = 0.8\n"
            # as in production: above worker.task_time_limit_s, or RabbitMQ closes the channel
            # of a task that holds its (late-acked) message longer than 30 minutes
            "consumer_timeout = 25200000\n"
        )
        return {
            **os.environ,
            "HOME": str(d / "home"),  # the Erlang cookie lives here, not in root's or rabbitmq's
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def start(self) -> None:
        # Our own epmd in the foreground: the one the Erlang VM would start itself daemonizes
        # and outlives the test.
        epmd = procs.start(
            "epmd",
            [self._epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            self.directory / "epmd.log",
            env=self._env,
        )
        self._processes.append(epmd)
        epmd.wait_ready(lambda: procs.port_open(self.epmd_port), 10.0)
        server = procs.start(
            "rabbitmq-server",
            [self._executable],
            self.directory / "rabbitmq.log",
            env=self._env,
            cwd=self.directory,
        )
        self._processes.append(server)
        server.wait_ready(lambda: _speaks_amqp(self.port), START_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM: RabbitMQ shuts down cleanly; then its epmd."""
        while self._processes:
            procs.stop(self._processes.pop(), STOP_GRACE_S)


@contextmanager
def rabbitmq_server(directory: Path) -> Iterator[RabbitMQServer]:
    """Run a private RabbitMQ with its state in `directory`; yields it (`.url`)."""
    server = RabbitMQServer(directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _another_free_port(*taken: int) -> int:
    while True:
        port = procs.free_port()
        if port not in taken:
            return port


def _speaks_amqp(port: int) -> bool:
    """The broker answers the AMQP 0-9-1 header with connection.start (a method frame)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.settimeout(2.0)
            sock.sendall(AMQP_HEADER)
            return sock.recv(1) == b"\x01"
    except OSError:
        return False
