"""shared.ssh against a real OpenSSH server on 127.0.0.1: the agent, netcat, pins, failures."""

from __future__ import annotations

import ast
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lab import procs
from lab.hosts.sshd import SYSTEM_PATH, ClientKey, SshServer, keygen, ssh_user
from shared.ssh import (
    ConnectionDropped,
    HostAccess,
    HostAuthFailed,
    HostKeyRefused,
    HostSession,
    HostUnreachable,
    NetcatOptions,
    RemoteAgent,
    RemoteCommandFailed,
    RemoteIOError,
    Segment,
)
from shared.ssh.agent_script import AGENT_SCRIPT
from shared.ssh.netcat import NetcatConnectFailed, Rendezvous

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
SPARSE_SIZE = 8 * MiB
ISLANDS = [(0, 4096), (MiB + 512, 70_000), (5 * MiB, 2 * MiB), (SPARSE_SIZE - 100, 100)]
BENCH_SIZE = 256 * MiB
MODES = ["ssh", "netcat"]


# the host: one sshd for the module


class Host:
    def __init__(self, root: Path, registry: procs.ProcessRegistry, path: str = "") -> None:
        self.root = root
        self.key = ClientKey.create(root / "ssh")
        bin_dir = root / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        self.server = _Sshd("h1", root / "sshd", procs.free_port(), self.key, bin_dir, registry)
        self.server.path = path
        self.server.spawn()
        self.server.wait_ready()
        self.access = HostAccess(
            name="host-one",
            address="127.0.0.1",
            port=self.server.port,
            user=ssh_user(),
            host_key=self.server.host_public_key(),
            private_key=self.key.private_key.read_text(),
        )


class _Sshd(SshServer):
    """SshServer, with another PATH for the sessions when `path` is set."""

    path = ""

    def _config(self, host_key: Path) -> str:
        text = super()._config(host_key)
        if not self.path:
            return text
        return text.replace(f"SetEnv PATH={self.bin_dir}:{SYSTEM_PATH}", f"SetEnv PATH={self.path}")


@pytest.fixture(scope="module")
def registry() -> Iterator[procs.ProcessRegistry]:
    registry = procs.ProcessRegistry()
    yield registry
    registry.stop_all()


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, registry: procs.ProcessRegistry) -> Host:
    return Host(tmp_path_factory.mktemp("host"), registry)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A sparse file with data islands, and a small dense one (the host's volumes)."""
    root = tmp_path_factory.mktemp("volumes")
    rng = random.Random(7)
    sparse = root / "sparse.raw"
    with open(sparse, "wb") as f:
        f.truncate(SPARSE_SIZE)
        for start, length in ISLANDS:
            f.seek(start)
            f.write(rng.randbytes(length))
    dense = root / "dense.qcow2"
    dense.write_bytes(rng.randbytes(300_000))
    (root / "link").symlink_to(dense)
    (root / "dangling").symlink_to(root / "nothing-here")
    return {"sparse": sparse, "dense": dense, "root": root}


def netcat_options(mode: str) -> NetcatOptions | None:
    if mode == "ssh":
        return None
    port = procs.free_port()
    return NetcatOptions((port, port + 20))


@pytest.fixture(params=MODES)
def agent(request: pytest.FixtureRequest, host: Host) -> Iterator[RemoteAgent]:
    with HostSession(host.access) as session, session.agent(netcat_options(request.param)) as a:
        yield a


# reads and metadata


def test_the_agent_script_is_python_3_6() -> None:
    ast.parse(AGENT_SCRIPT, feature_version=(3, 6))  # EL8 hosts have Python 3.6


def test_reads_many_segments_across_holes_and_files(
    agent: RemoteAgent, files: dict[str, Path]
) -> None:
    sparse, dense = files["sparse"].read_bytes(), files["dense"].read_bytes()
    rng = random.Random(11)
    segments, expected = [], b""
    for _ in range(200):
        name, content = rng.choice([("sparse", sparse), ("dense", dense)])
        offset = rng.randrange(len(content))
        length = rng.randrange(min(len(content) - offset, 200_000) + 1)
        segments.append(Segment(str(files[name]), offset, length))
        expected += content[offset : offset + length]
    assert agent.read(segments) == expected
    buffer = bytearray(b"\xee" * (len(expected) + 10))
    agent.read_into(segments, memoryview(buffer))
    assert buffer[: len(expected)] == expected and buffer[len(expected) :] == b"\xee" * 10
    assert agent.read([Segment(str(files["sparse"]), 0, SPARSE_SIZE)]) == sparse
    assert agent.read([]) == b""


def test_prefetched_reads_arrive_in_order(agent: RemoteAgent, files: dict[str, Path]) -> None:
    content = files["sparse"].read_bytes()
    chunks = [Segment(str(files["sparse"]), start, MiB) for start in range(0, SPARSE_SIZE, MiB)]
    agent.prefetch([chunks[0]])
    for i, chunk in enumerate(chunks):
        if i + 1 < len(chunks):
            agent.prefetch([chunks[i + 1]])
        assert agent.read([chunk]) == content[chunk.offset : chunk.offset + MiB]
    agent.prefetch([chunks[0]])  # never taken: dropped before the next request
    assert agent.size(str(files["dense"])) == 300_000


def local_extents(path: Path) -> list[tuple[int, int]]:
    found, pos = [], 0
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        while pos < size:
            try:
                start = os.lseek(f.fileno(), pos, os.SEEK_DATA)
            except OSError:
                break
            pos = os.lseek(f.fileno(), start, os.SEEK_HOLE)
            found.append((start, pos - start))
    return found


def test_size_exists_and_data_extents(agent: RemoteAgent, files: dict[str, Path]) -> None:
    root = files["root"]
    assert agent.size(str(files["sparse"])) == SPARSE_SIZE
    assert agent.size(str(root / "link")) == 300_000
    assert agent.exists(str(files["dense"])) and agent.exists(str(root / "link"))
    assert not agent.exists(str(root / "dangling")) and not agent.exists(str(root / "nope"))
    extents = agent.data_extents(str(files["sparse"]))
    assert extents == local_extents(files["sparse"])
    for start, length in ISLANDS:  # every island is inside the data extents
        assert any(s <= start and start + length <= s + n for s, n in extents)
    assert sum(n for _, n in extents) < SPARSE_SIZE  # the holes are seen (ext4 does)
    assert agent.data_extents(str(files["dense"])) == [(0, 300_000)]


def test_a_missing_file_fails_that_request_only(agent: RemoteAgent, files: dict[str, Path]) -> None:
    missing = str(files["root"] / "missing.raw")
    with pytest.raises(RemoteIOError, match="ENOENT") as failed:
        agent.read([Segment(str(files["dense"]), 0, 10), Segment(missing, 0, 10)])
    assert failed.value.path == missing and "host-one" in str(failed.value)
    assert failed.value.code == "ENOENT"
    with pytest.raises(RemoteIOError, match="ESHORT"):
        agent.read([Segment(str(files["dense"]), 299_990, 11)])
    with pytest.raises(RemoteIOError, match="ENOENT"):
        agent.size(missing)
    with pytest.raises(RemoteIOError, match="ENOENT"):
        agent.write(missing, 0, b"x" * 100_000)  # its bytes are skipped, not taken as requests
    assert agent.read([Segment(str(files["dense"]), 5, 3)]) == files["dense"].read_bytes()[5:8]


# writes


def test_write_zero_and_fsync(agent: RemoteAgent, tmp_path: Path) -> None:
    target = tmp_path / "volume.raw"
    original = random.Random(3).randbytes(4 * MiB)
    target.write_bytes(original)
    payload = random.Random(4).randbytes(MiB + 123)
    agent.write(str(target), 1000, payload)
    agent.write(str(target), 3 * MiB, memoryview(payload)[:5000])
    agent.zero(str(target), 2 * MiB + 7, MiB + 3)
    agent.fsync(str(target))
    expected = bytearray(original)
    expected[1000 : 1000 + len(payload)] = payload
    expected[3 * MiB : 3 * MiB + 5000] = payload[:5000]
    expected[2 * MiB + 7 : 3 * MiB + 10] = bytes(MiB + 3)
    assert target.read_bytes() == expected  # same size: never truncated
    agent.write(str(target), 4 * MiB, b"tail")  # past the end of a file: it grows
    assert target.stat().st_size == 4 * MiB + 4
    assert agent.read([Segment(str(target), 4 * MiB, 4)]) == b"tail"


# failures of the connection


def kill_agent(agent: RemoteAgent) -> None:
    assert agent.pid is not None
    os.kill(agent.pid, signal.SIGKILL)  # the agent's process on the "host" (this machine)


@pytest.mark.parametrize("mode", MODES)
def test_killed_agent_mid_read_drops_the_connection(host: Host, mode: str, tmp_path: Path) -> None:
    big = tmp_path / "big.raw"
    with open(big, "wb") as f:
        f.truncate(192 * MiB)  # more than every buffer on the way holds
    with HostSession(host.access) as session, session.agent(netcat_options(mode)) as agent:
        segment = Segment(str(big), 0, 192 * MiB)
        agent.prefetch([segment])  # the agent streams until the buffers are full
        time.sleep(0.3)
        kill_agent(agent)
        with pytest.raises(ConnectionDropped, match="host-one"):
            agent.read_into([segment], memoryview(bytearray(192 * MiB)))
        with pytest.raises(ConnectionDropped):
            agent.size(str(big))


def test_closed_session_drops_the_agent(host: Host, files: dict[str, Path]) -> None:
    session = HostSession(host.access)
    agent = session.agent()
    assert agent.size(str(files["dense"])) == 300_000
    session.close()
    with pytest.raises(ConnectionDropped, match="host-one"):
        agent.size(str(files["dense"]))


# host keys and credentials


def test_a_changed_host_key_is_refused(host: Host, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other_host_key", "other").with_suffix(".pub").read_text()
    with pytest.raises(HostKeyRefused, match=r"host host-one .* has changed"):
        HostSession(replace(host.access, host_key=" ".join(other.split()[:2])))
    with pytest.raises(HostKeyRefused, match="no host key is pinned for host host-one"):
        HostSession(replace(host.access, host_key=""))


def test_the_pin_may_be_a_fingerprint(host: Host) -> None:
    line = host.server.host_public_key()
    (host.root / "pin.pub").write_text(line + "\n")
    printed = subprocess.run(
        ["ssh-keygen", "-lf", str(host.root / "pin.pub")], capture_output=True, text=True
    ).stdout.split()[1]
    with HostSession(replace(host.access, host_key=printed)) as session:
        assert session.run(["echo", "a b", "$HOME"]) == "a b $HOME\n"
        assert session.local_address == "127.0.0.1"


def test_wrong_credentials_and_no_server(host: Host, tmp_path: Path) -> None:
    stranger = keygen(tmp_path / "stranger", "stranger").read_text()
    with pytest.raises(HostAuthFailed, match="host-one"):
        HostSession(replace(host.access, private_key=stranger))
    with pytest.raises(HostUnreachable, match="host-one"):
        HostSession(replace(host.access, port=procs.free_port()))
    assert "PRIVATE" not in repr(host.access) and "private_key" in host.access.redacted()


def test_a_failed_command_names_host_status_and_stderr(host: Host) -> None:
    with HostSession(host.access) as session, pytest.raises(RemoteCommandFailed) as failed:
        session.run(["sh", "-c", "echo partial; echo 'it broke' >&2; exit 3"])
    assert failed.value.status == 3 and "it broke" in str(failed.value)
    assert "host-one" in str(failed.value)


def test_no_netcat_or_python_on_the_host(
    tmp_path_factory: pytest.TempPathFactory, registry: procs.ProcessRegistry
) -> None:
    root = tmp_path_factory.mktemp("bare")
    tools = root / "tools"
    tools.mkdir()
    for tool in ("sh", "bash"):  # bash: root's ~/.bashrc may run bash scripts
        (tools / tool).symlink_to(f"/bin/{tool}")
    bare = Host(root, registry, path=str(tools))
    with HostSession(bare.access) as session:
        with pytest.raises(RemoteCommandFailed, match="install netcat") as no_netcat:
            session.agent(netcat_options("netcat"))
        with pytest.raises(RemoteCommandFailed, match="python3") as no_python:
            session.agent()
    assert "host-one" in str(no_netcat.value) and "nc: not found" in str(no_netcat.value)
    # (here root's ~/.bashrc puts pyenv's python3 shim on the PATH, which then fails)
    assert no_python.value.status != 0 and "python3 on the host's PATH" in str(no_python.value)


# netcat connections


def test_only_the_hosts_connection_with_the_token_is_taken() -> None:
    port = procs.free_port()
    with Rendezvous("host-one", NetcatOptions((port, port)), "127.0.0.1", "127.0.0.1") as rv:
        strangers = [
            connect(port, b"x" * 16),  # wrong token
            connect(port, rv.token, source="127.0.0.2"),  # right token, not the host
            connect(port, b""),  # silent
        ]
        real = connect(port, rv.token + b"data")
        conn = rv.accept(lambda: False)
        assert conn.recv(4) == b"data"
        for sock in strangers[:2]:
            assert closed_by_peer(sock)
        conn.close()
        for sock in [*strangers, real]:
            sock.close()
    with (
        Rendezvous("host-one", NetcatOptions((port, port), accept_timeout_s=0.3),
                   "127.0.0.1", "127.0.0.1") as rv,
        pytest.raises(NetcatConnectFailed, match="host-one"),
    ):
        rv.accept(lambda: False)


def connect(port: int, data: bytes, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.sendall(data)
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(2)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_stray_connection_to_the_netcat_port_is_refused(
    host: Host, files: dict[str, Path]
) -> None:
    port = procs.free_port()
    refused: list[bool] = []

    def stray() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                sock = connect(port, b"\0" * 16)
            except OSError:
                time.sleep(0.001)
                continue
            refused.append(closed_by_peer(sock))
            sock.close()
            return

    thread = threading.Thread(target=stray)
    thread.start()
    with HostSession(host.access) as session, session.agent(NetcatOptions((port, port))) as a:
        thread.join()
        assert a.read([Segment(str(files["dense"]), 0, 5)]) == files["dense"].read_bytes()[:5]
    assert refused == [True]


# throughput, printed for the record


def test_print_throughput_against_openssh(host: Host, tmp_path: Path) -> None:
    volume = tmp_path / "bench.raw"
    block = random.Random(5).randbytes(MiB)
    with open(volume, "wb") as f:
        for _ in range(BENCH_SIZE // MiB):
            f.write(block)
    key = host.root / "ssh" / "id_ed25519"
    argv = ["ssh", "-p", str(host.access.port), "-i", str(key), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            f"{host.access.user}@127.0.0.1", "cat", str(volume)]
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
    rates = {"ssh cat": BENCH_SIZE / (time.perf_counter() - started) / MiB}
    for mode in MODES:
        rates[f"agent {mode}"] = read_rate(host, volume, netcat_options(mode))
    figures = ", ".join(f"{name} {rate:.0f} MiB/s" for name, rate in rates.items())
    print(f"\nthroughput of a 256 MiB read: {figures}")


def read_rate(host: Host, volume: Path, netcat: NetcatOptions | None) -> float:
    request = 4 * MiB
    buffer = memoryview(bytearray(request))
    with HostSession(host.access) as session, session.agent(netcat) as agent:
        started = time.perf_counter()
        for offset in range(0, BENCH_SIZE, request):
            agent.read_into([Segment(str(volume), offset, request)], buffer)
        return BENCH_SIZE / (time.perf_counter() - started) / MiB
