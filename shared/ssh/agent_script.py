"""The agent run on a hypervisor by `python3 -c AGENT_SCRIPT [TOKEN]`: stdlib only, Python 3.6+.

Requests come on stdin, one JSON line each; a write request is followed by exactly `length`
raw bytes. Every request is answered on stdout by one frame: a status byte (0 ok, 1 error),
an 8-byte big-endian payload length and the payload (read: the raw bytes; other ops: JSON;
error: "ENOENT: /path: No such file or directory"; ESHORT: the file ends before the
segment). With a TOKEN argument (netcat mode) the 16 token bytes come first on stdout.
The first frame is a hello: {"pid": ..., "version": 1}.

An error in a request is answered and the agent goes on. Only a failure after a read's
header was sent (the file shrank, EIO) cannot be framed: it is written to stderr with the
prefix `drover-agent: fatal:` and the agent exits with status 3.

The script's first line names it "drover-agent", so that it can be found in a process list.
"""

from __future__ import annotations

FATAL_PREFIX = "drover-agent: fatal:"
FATAL_STATUS = 3
VERSION = 1

AGENT_SCRIPT = r'''
# drover-agent: reads and writes volume files for a Drover worker (shared/ssh/agent.py)
import errno, json, os, struct, sys

CHUNK = 1 << 20
HEAD = struct.Struct(">BQ")
MAX_OPEN = 256
ZEROS = bytes(CHUNK)
rfds, wfds = {}, {}
state = {"sendfile": hasattr(os, "sendfile")}


class Failure(Exception):
    pass


def send(data):
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]


def reply(status, payload):
    send(HEAD.pack(status, len(payload)) + payload)


def die(message):
    os.write(2, ("%s %s\n" % ("''' + FATAL_PREFIX + r'''", message)).encode())
    os._exit(''' + str(FATAL_STATUS) + r''')


def describe(e, path):
    code = errno.errorcode.get(e.errno, "EIO")
    return "%s: %s: %s" % (code, getattr(e, "filename", None) or path, e.strerror or e)


def trim():
    for cache in (rfds, wfds):
        if len(cache) > MAX_OPEN:
            for fd in cache.values():
                os.close(fd)
            cache.clear()


def opened(cache, path, flags):
    fd = cache.get(path)
    if fd is None:
        fd = cache[path] = os.open(path, flags | os.O_CLOEXEC)
    return fd


def end(fd):
    return os.lseek(fd, 0, os.SEEK_END)


def copy_out(fd, offset, length):
    if state["sendfile"]:
        try:
            return os.sendfile(1, fd, offset, min(length, 1 << 30))
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            state["sendfile"] = False
    data = os.pread(fd, min(length, CHUNK), offset)
    send(data)
    return len(data)


def stream(fd, path, offset, length):
    end_at = offset + length
    try:
        while offset < end_at:
            n = copy_out(fd, offset, end_at - offset)
            if n <= 0:
                die("ESHORT: %s: ends before byte %d" % (path, end_at))
            offset += n
    except OSError as e:
        die(describe(e, path))


def op_read(req):
    segments = []
    for path, offset, length in req["segments"]:
        fd = opened(rfds, path, os.O_RDONLY)
        size = end(fd)
        if offset < 0 or length < 0 or offset + length > size:
            raise Failure("ESHORT: %s: bytes %d-%d asked, it has %d"
                          % (path, offset, offset + length, size))
        segments.append((fd, path, offset, length))
    send(HEAD.pack(0, sum(s[3] for s in segments)))
    for segment in segments:
        stream(*segment)


def pwrite_all(fd, data, offset):
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def op_write(req):
    path, offset, left = req["path"], req["offset"], req["length"]
    error = None
    try:
        fd = opened(wfds, path, os.O_WRONLY)
    except OSError as e:
        error = e
    while left > 0:
        data = sys.stdin.buffer.read(min(CHUNK, left))
        if not data:
            sys.exit(0)
        if error is None:
            try:
                pwrite_all(fd, data, offset)
            except OSError as e:
                error = e
        offset, left = offset + len(data), left - len(data)
    if error is not None:
        raise error
    return None


def op_zero(req):
    fd = opened(wfds, req["path"], os.O_WRONLY)
    offset, left = req["offset"], req["length"]
    while left > 0:
        n = min(CHUNK, left)
        pwrite_all(fd, memoryview(ZEROS)[:n], offset)
        offset, left = offset + n, left - n
    return None


def op_fsync(req):
    fd = wfds.get(req["path"])
    if fd is not None:
        os.fsync(fd)
        return None
    fd = os.open(req["path"], os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return None


def op_size(req):
    return end(opened(rfds, req["path"], os.O_RDONLY))


def op_exists(req):
    return os.path.exists(req["path"])


def op_extents(req):
    fd = opened(rfds, req["path"], os.O_RDONLY)
    size, pos, found = end(fd), 0, []
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                break
            pos = os.lseek(fd, start, os.SEEK_HOLE)
            found.append([start, pos - start])
    except (OSError, AttributeError) as e:
        if getattr(e, "errno", errno.EINVAL) not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        return [[0, size]] if size else []
    return found


def op_release(req):
    for cache in (rfds, wfds):
        fd = cache.pop(req["path"], None)
        if fd is not None:
            os.close(fd)
    return None


OPS = {"read": op_read, "write": op_write, "zero": op_zero, "fsync": op_fsync,
       "size": op_size, "exists": op_exists, "extents": op_extents, "release": op_release}


def handle(line):
    req = {}
    try:
        req = json.loads(line.decode("utf-8"))
        trim()
        result = OPS[req["op"]](req)
    except Failure as e:
        return reply(1, str(e).encode("utf-8", "replace"))
    except OSError as e:
        return reply(1, describe(e, req.get("path", "?")).encode("utf-8", "replace"))
    except (ValueError, KeyError, TypeError) as e:
        return reply(1, ("EINVAL: bad request: %r" % (e,)).encode())
    if req["op"] != "read":
        reply(0, json.dumps(result).encode())


def main():
    try:
        import fcntl
        fcntl.fcntl(1, 1031, CHUNK)  # F_SETPIPE_SZ: fewer wake-ups when stdout is a pipe
    except (ImportError, OSError):
        pass
    if len(sys.argv) > 1:
        send(bytes.fromhex(sys.argv[1]))
    reply(0, json.dumps({"pid": os.getpid(), "version": ''' + str(VERSION) + r'''}).encode())
    while True:
        line = sys.stdin.buffer.readline()
        if not line:
            return
        handle(line)


main()
'''
