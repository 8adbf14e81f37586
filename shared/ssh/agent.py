"""`RemoteAgent`: random access to volume files on a hypervisor through the agent script.

One agent is one remote process. Requests go to its stdin over the SSH channel; answers
(frames, see `shared.ssh.agent_script`) come back on a data stream: the same SSH channel, or
a plain TCP connection with netcat. One request is in flight at a time (a lock serialises
callers), except reads announced ahead with `prefetch`, answered in order.
"""

from __future__ import annotations

import contextlib
import json
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import paramiko

from shared.errors import DroverError, ServiceError
from shared.ssh.agent_script import FATAL_PREFIX

HEAD = struct.Struct(">BQ")
OK = 0
SEND_CHUNK = 32 * 1024  # one SSH packet: OpenSSH's session channels take no larger
DISCARD_CHUNK = 1024 * 1024
MAX_PREFETCH = 8
METADATA_LIMIT = 64 * 1024 * 1024
EXIT_WAIT_S = 2.0


@dataclass(frozen=True)
class Segment:
    path: str
    offset: int
    length: int


class RemoteIOError(DroverError):
    """The agent could not do a request on the host: a missing file, EACCES, EIO..."""

    def __init__(self, host: str, op: str, path: str, reason: str) -> None:
        super().__init__(
            f"{op} of {path} on host {host} failed: {reason}",
            hint="check that the volume exists on the host and is readable by the SSH user",
        )
        self.host = host
        self.op = op
        self.path = path
        self.reason = reason
        self.code = reason.split(":", 1)[0]


class ConnectionDropped(ServiceError):
    """The SSH session, the agent or its netcat connection ended in the middle of a request."""

    def __init__(self, message: str, *, hint: str = "", stderr: str = "") -> None:
        super().__init__(message, hint=hint)
        self.stderr = stderr  # what the agent's command left on stderr, if anything


class DataStream(Protocol):
    """Where the agent's frames arrive from."""

    def recv_into(self, view: memoryview) -> int:
        """Fill the start of `view`; 0 at the end of the stream; TimeoutError if it stalls."""
        ...

    def close(self) -> None: ...


class ChannelStream:
    """The frames on the agent's stdout, carried by the SSH channel itself."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self._channel = channel

    def recv_into(self, view: memoryview) -> int:
        data = self._channel.recv(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._channel.close()


def total_length(segments: Sequence[Segment]) -> int:
    if any(s.offset < 0 or s.length < 0 for s in segments):
        raise ValueError("segments need a non-negative offset and length")
    return sum(s.length for s in segments)


class RemoteAgent:
    """The agent process on one host; a context manager that ends it on exit."""

    def __init__(
        self, host: str, channel: paramiko.Channel, stream: DataStream, *, timeout_s: float
    ) -> None:
        self.host = host
        self._channel = channel
        self._stream = stream
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._head = bytearray(HEAD.size)
        self._pending: deque[tuple[Segment, ...]] = deque()
        self._broken = ""
        self._close_lock = threading.Lock()
        self._closed = False
        hello = self._decode(self._payload("start", "the agent"))
        pid = hello.get("pid") if isinstance(hello, dict) else None
        self.pid: int | None = pid if isinstance(pid, int) else None

    # public API

    def read_into(self, segments: Sequence[Segment], buffer: memoryview) -> None:
        """The segments' bytes, concatenated, into buffer[:sum of lengths]."""
        wanted = tuple(segments)
        total = total_length(wanted)
        buffer = buffer.cast("B")
        if buffer.readonly or len(buffer) < total:
            raise ValueError(f"a writable buffer of {total} bytes is needed")
        with self._request():
            if self._pending and self._pending[0] == wanted:
                self._pending.popleft()
            else:
                self._drain()
                self._send_read(wanted)
            self._receive_read(wanted, buffer[:total])

    def read(self, segments: Sequence[Segment]) -> bytes:
        buffer = bytearray(total_length(segments))
        self.read_into(segments, memoryview(buffer))
        return bytes(buffer)

    def prefetch(self, segments: Sequence[Segment]) -> None:
        """Ask for a read now, so that the host sends it while the caller works on the last.

        The next `read_into` of the same segments takes the answer; any other request first
        reads and drops the answers of reads announced but not taken.
        """
        wanted = tuple(segments)
        total_length(wanted)
        with self._request():
            if len(self._pending) >= MAX_PREFETCH:
                return
            self._send_read(wanted)
            self._pending.append(wanted)

    def size(self, path: str) -> int:
        value = self._call("size", path, {})
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._drop(f"size answered {value!r}")
        return value

    def exists(self, path: str) -> bool:
        value = self._call("exists", path, {})
        if not isinstance(value, bool):
            raise self._drop(f"exists answered {value!r}")
        return value

    def data_extents(self, path: str) -> list[tuple[int, int]]:
        value = self._call("extents", path, {})
        extents = [_extent(item) for item in value] if isinstance(value, list) else [None]
        if None in extents:
            raise self._drop(f"extents answered {value!r}")
        return [e for e in extents if e is not None]

    def write(self, path: str, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        self._call("write", path, {"offset": offset, "length": len(view)}, body=view)

    def zero(self, path: str, offset: int, length: int) -> None:
        self._call("zero", path, {"offset": offset, "length": length})

    def fsync(self, path: str) -> None:
        self._call("fsync", path, {})

    def release(self, path: str) -> None:
        """Close the agent's descriptors of `path` (an LV in use cannot be deactivated)."""
        self._call("release", path, {})

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Ends the remote process: EOF on its stdin, then the channel and the stream."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        # unread answers, or a request cut short: the agent may be stuck sending to nobody
        stuck = bool(self._pending or self._broken)
        self._broken = self._broken or "the agent was closed"
        with contextlib.suppress(OSError, paramiko.SSHException, EOFError):
            self._channel.shutdown_write()
            # its files closed before we return (an LV can then be deactivated)
            _wait_until(self._channel.exit_status_ready, 0 if stuck else EXIT_WAIT_S)
        self._stream.close()
        self._channel.close()

    def __enter__(self) -> RemoteAgent:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # requests

    @contextlib.contextmanager
    def _request(self) -> Iterator[None]:
        with self._lock:
            if self._broken:
                raise ConnectionDropped(
                    f"the agent on host {self.host} cannot be used: {self._broken}",
                    hint="open a new agent (a new SSH session if the host went away)",
                )
            try:
                yield
            except RemoteIOError:
                raise  # a framed error: the stream is still in step
            except BaseException as e:
                self._broken = str(e) or type(e).__name__
                raise

    def _call(
        self, op: str, path: str, fields: dict[str, object], body: memoryview | None = None
    ) -> object:
        with self._request():
            self._drain()
            self._send({"op": op, "path": path, **fields}, body)
            return self._decode(self._payload(op, path))

    def _send_read(self, segments: tuple[Segment, ...]) -> None:
        listed = [[s.path, s.offset, s.length] for s in segments]
        self._send({"op": "read", "segments": listed})

    def _receive_read(self, segments: tuple[Segment, ...], view: memoryview) -> None:
        length = self._frame_length("read", _paths(segments))
        if length != len(view):
            raise self._drop(f"the agent sent {length} bytes for a read of {len(view)}")
        self._recv_exact(view)

    def _drain(self) -> None:
        """Read and drop the answers of prefetched reads nobody took."""
        while self._pending:
            segments = self._pending.popleft()
            with contextlib.suppress(RemoteIOError):
                self._discard(self._frame_length("read", _paths(segments)))

    def _discard(self, length: int) -> None:
        scratch = memoryview(bytearray(min(length, DISCARD_CHUNK)))
        while length:
            n = min(length, len(scratch))
            self._recv_exact(scratch[:n])
            length -= n

    def _send(self, request: dict[str, object], body: memoryview | None = None) -> None:
        line = json.dumps(request, separators=(",", ":")).encode() + b"\n"
        try:
            self._channel.sendall(line)
            if body is not None:
                for start in range(0, len(body), SEND_CHUNK):
                    self._channel.sendall(bytes(body[start : start + SEND_CHUNK]))
        except TimeoutError as e:
            raise self._drop(f"it took no request for {self._timeout_s:g}s") from e
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise self._drop(f"sending a request failed: {e}") from e

    # frames

    def _payload(self, op: str, path: str) -> bytes:
        length = self._frame_length(op, path)
        if length > METADATA_LIMIT:
            raise self._drop(f"the agent announced {length} bytes for {op}")
        data = bytearray(length)
        self._recv_exact(memoryview(data))
        return bytes(data)

    def _frame_length(self, op: str, path: str) -> int:
        """The payload length of the next frame; an error frame raises RemoteIOError."""
        self._recv_exact(memoryview(self._head))
        status, length = HEAD.unpack(self._head)
        if status == OK:
            return int(length)
        if length > METADATA_LIMIT:
            raise self._drop(f"the agent announced an error of {length} bytes")
        message = bytearray(length)
        self._recv_exact(memoryview(message))
        reason = message.decode("utf-8", errors="replace")
        raise RemoteIOError(self.host, op, _failed_path(reason, path), reason)

    def _recv_exact(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            try:
                n = self._stream.recv_into(view[got:])
            except TimeoutError as e:
                raise self._drop(f"no data for {self._timeout_s:g}s") from e
            except (OSError, EOFError, paramiko.SSHException) as e:
                raise self._drop(str(e)) from e
            if n == 0:
                raise self._drop("the data stream ended")
            got += n

    def _decode(self, payload: bytes) -> object:
        try:
            value: object = json.loads(payload)
        except ValueError as e:
            raise self._drop(f"the agent answered {payload[:80]!r}") from e
        return value

    def _drop(self, reason: str) -> DroverError:
        """The error for a stream that broke: the agent's own fatal error if it left one.

        The agent is unusable afterwards: the stream is out of step, or gone.
        """
        self._broken = self._broken or reason
        stderr = self._stderr_after_exit()
        for line in stderr.splitlines():
            if line.startswith(FATAL_PREFIX):
                detail = line[len(FATAL_PREFIX) :].strip()
                return RemoteIOError(self.host, "read", _failed_path(detail, "?"), detail)
        tail = f"; its stderr: {stderr[-300:]}" if stderr.strip() else ""
        return ConnectionDropped(
            f"the agent on host {self.host} stopped answering: {reason}{tail}",
            hint="the SSH session or the agent ended; the transfer can be retried",
            stderr=stderr,
        )

    def _stderr_after_exit(self) -> str:
        if not self._channel.closed:
            _wait_until(self._channel.exit_status_ready, 0.5)
        chunks = []
        with contextlib.suppress(OSError, paramiko.SSHException):
            while self._channel.recv_stderr_ready():
                chunks.append(self._channel.recv_stderr(65536))
        return b"".join(chunks).decode("utf-8", errors="replace")


def _wait_until(done: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _extent(item: object) -> tuple[int, int] | None:
    if isinstance(item, list) and len(item) == 2 and all(isinstance(v, int) for v in item):
        return int(item[0]), int(item[1])
    return None


def _paths(segments: Sequence[Segment]) -> str:
    return ", ".join(dict.fromkeys(s.path for s in segments)) or "nothing"


def _failed_path(reason: str, fallback: str) -> str:
    """The path in "ENOENT: /path: No such file or directory"."""
    parts = reason.split(": ")
    return parts[1] if len(parts) >= 3 else fallback
