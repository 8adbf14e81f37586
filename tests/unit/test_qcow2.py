"""shared.qcow2 against QEMU: maps of real images, and images written by the stream writer."""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.qcow2 import (
    Allocation,
    Kind,
    Qcow2Error,
    Qcow2Header,
    Qcow2StreamWriter,
    inflate,
    is_qcow2,
    map_layer,
    qcow2_size_bound,
    read_header,
)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
CLUSTER = 64 * KiB

# (start, length, kind, host offset or None), merged the way `qemu-img map` merges entries.
MapEntry = tuple[int, int, str, int | None]


class LocalFile:
    """RandomAccess over a local file, counting reads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reads: list[tuple[int, int]] = []

    def read_at(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        with self.path.open("rb") as f:
            f.seek(offset)
            return f.read(length)


class LocalWriter:
    """FileWriter onto a local file (pwrite: safe from several threads)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.writes = 0
        self.skip = False

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        self.writes += 1
        if not self.skip:
            os.pwrite(self.fd, data, offset)

    def close(self) -> None:
        os.close(self.fd)


def run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def qemu_io(path: Path, *commands: str) -> None:
    args = ["qemu-io", "-f", "qcow2"]
    for command in commands:
        args += ["-c", command]
    run(*args, str(path))


def create(path: Path, size: str, *options: str, backing: Path | None = None) -> Path:
    args = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", ",".join(["compat=1.1", *options])]
    if backing is not None:
        args += ["-b", str(backing), "-F", "qcow2"]
    run(*args, str(path), size)
    return path


def layer_json(path: Path) -> str:
    """The image without its backing file: QEMU's view of one layer."""
    spec = {"driver": "qcow2", "file": {"driver": "file", "filename": str(path)}, "backing": None}
    return "json:" + json.dumps(spec)


def qemu_map(path: Path) -> list[MapEntry]:
    entries = json.loads(run("qemu-img", "map", "--output=json", "-f", "qcow2", layer_json(path)))
    result: list[MapEntry] = []
    for entry in entries:
        if not entry["present"]:
            continue
        if entry["data"]:
            kind = "data" if "offset" in entry else "compressed"
        else:
            assert entry["zero"]
            kind = "zero"
        result.append((entry["start"], entry["length"], kind, entry.get("offset")))
    return merge(result)


def our_map(allocations: list[Allocation]) -> list[MapEntry]:
    return merge(
        [
            (a.start, a.length, a.kind.value, a.host_offset if a.kind is Kind.DATA else None)
            for a in allocations
        ]
    )


def merge(entries: list[MapEntry]) -> list[MapEntry]:
    merged: list[MapEntry] = []
    for start, length, kind, offset in entries:
        offset = offset if kind == "data" else None
        if merged:
            m_start, m_length, m_kind, m_offset = merged[-1]
            contiguous = m_offset is None or offset == m_offset + m_length
            if m_start + m_length == start and m_kind == kind and contiguous:
                merged[-1] = (m_start, m_length + length, kind, m_offset)
                continue
        merged.append((start, length, kind, offset))
    return merged


def layer_raw(path: Path, tmp_path: Path) -> bytes:
    raw = tmp_path / f"{path.name}.raw"
    run("qemu-img", "convert", "-O", "raw", layer_json(path), str(raw))
    return raw.read_bytes()


def open_layer(path: Path) -> tuple[LocalFile, Qcow2Header, list[Allocation]]:
    src = LocalFile(path)
    header = read_header(src, path.name)
    return src, header, map_layer(src, header, name=path.name)


def check_bytes(path: Path, tmp_path: Path) -> list[Allocation]:
    """map_layer agrees with qemu-img map, and the bytes it points at are the layer's."""
    _, header, allocations = open_layer(path)
    assert our_map(allocations) == qemu_map(path)
    raw = layer_raw(path, tmp_path)
    data = path.read_bytes()
    for a in allocations:
        expected = raw[a.start : a.end]
        if a.kind is Kind.DATA:
            assert data[a.host_offset : a.host_offset + a.length] == expected
        elif a.kind is Kind.ZERO:
            assert expected == bytes(a.length)
        else:
            packed = data[a.host_offset : a.host_offset + a.host_length]
            assert inflate(header, packed)[: a.length] == expected
    assert sorted(allocations, key=lambda a: a.start) == allocations
    return allocations


def test_top_layer_with_backing_file(tmp_path: Path) -> None:
    base = create(tmp_path / "base.qcow2", "8M")
    qemu_io(base, "write -P 0x11 0 4M")
    top = create(tmp_path / "top.qcow2", "8M", backing=base)
    qemu_io(
        top,
        "write -P 0xab 1M 64k",
        "write -z 2M 128k",
        "write -P 0xcd 3M 192k",
        "write -z -u 0 64k",
        "write -P 0xef 6M 64k",
        "write -z 6M 64k",  # a zero cluster that keeps its preallocated host cluster
    )
    _, header, _ = open_layer(top)
    assert header.backing_file == str(base)
    assert header.backing_format == "qcow2"
    assert (header.version, header.cluster_size, header.virtual_size) == (3, CLUSTER, 8 * MiB)
    assert (header.compression_type, header.extended_l2) == ("zlib", False)
    allocations = check_bytes(top, tmp_path)
    assert [(a.start, a.length, a.kind) for a in allocations] == [
        (0, 64 * KiB, Kind.ZERO),
        (1 * MiB, 64 * KiB, Kind.DATA),
        (2 * MiB, 128 * KiB, Kind.ZERO),
        (3 * MiB, 192 * KiB, Kind.DATA),
        (6 * MiB, 64 * KiB, Kind.ZERO),
    ]


def test_base_layer_merges_contiguous_data(tmp_path: Path) -> None:
    base = create(tmp_path / "base.qcow2", "16M")
    qemu_io(base, "write -P 0x11 0 2M", "write -P 0x22 8M 1M", "write -P 0x33 4M 64k")
    _, header, _ = open_layer(base)
    assert (header.backing_file, header.backing_format) == (None, None)
    allocations = check_bytes(base, tmp_path)
    assert [(a.start, a.length) for a in allocations] == [
        (0, 2 * MiB),
        (4 * MiB, CLUSTER),
        (8 * MiB, MiB),
    ]


def test_version_2_image(tmp_path: Path) -> None:
    image = tmp_path / "v2.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", str(image), "4M")
    qemu_io(image, "write -P 0x21 64k 128k", "write -P 0x22 3M 64k")
    _, header, _ = open_layer(image)
    assert (header.version, header.compression_type) == (2, "zlib")
    assert len(check_bytes(image, tmp_path)) == 2


def test_header_extensions_past_the_first_read(tmp_path: Path) -> None:
    """An (unknown) header extension of 5000 bytes: the header takes a second read."""
    image = tmp_path / "disk.qcow2"
    write_image(image, 4 * MiB, [(MiB, b"\x09" * CLUSTER)])
    with image.open("r+b") as f:
        f.seek(104)  # the writer's header length; the end-of-extensions marker was here
        f.write(struct.pack(">II", 0x12345678, 5000) + b"\xee" * 5000)
    src, header, allocations = open_layer(image)
    assert [length for _, length in src.reads[:2]] == [4096, CLUSTER]
    assert (header.virtual_size, header.backing_file) == (4 * MiB, None)
    assert check_bytes(image, tmp_path) == allocations


def test_empty_layer_has_no_allocations(tmp_path: Path) -> None:
    _, _, allocations = open_layer(create(tmp_path / "empty.qcow2", "1G"))
    assert allocations == []


@pytest.mark.parametrize("compression", ["zlib", "zstd"])
def test_compressed_clusters(tmp_path: Path, compression: str) -> None:
    rng = random.Random(7)
    size = 4 * MiB + 4608  # the last cluster is short (QEMU compresses it padded with zeros)
    raw = bytearray(size)
    for start in range(0, size, 3 * CLUSTER):  # compressible, not zero, some clusters empty
        raw[start : start + 70000] = bytes(rng.choice(b"abcd") for _ in range(1000)) * 70
    (tmp_path / "src.raw").write_bytes(raw[:size])
    image = tmp_path / "packed.qcow2"
    run(
        "qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2",
        "-o", f"compat=1.1,compression_type={compression}",
        str(tmp_path / "src.raw"), str(image),
    )  # fmt: skip
    allocations = check_bytes(image, tmp_path)
    assert read_header(LocalFile(image), "packed").compression_type == compression
    compressed = [a for a in allocations if a.kind is Kind.COMPRESSED]
    assert [a.length for a in compressed] == [CLUSTER] * (len(compressed) - 1) + [4608]
    assert all(0 < a.host_length <= CLUSTER + 512 for a in compressed)


def test_small_clusters_and_unaligned_virtual_size(tmp_path: Path) -> None:
    size = 5 * MiB + 1536  # 4 KiB clusters: an L2 table covers 2 MiB; the last cluster is short
    base = create(tmp_path / "base.qcow2", str(size), "cluster_size=4096")
    qemu_io(base, "write -P 0x01 0 5M")
    top = create(tmp_path / "top.qcow2", str(size), "cluster_size=4096", backing=base)
    qemu_io(
        top,
        "write -P 0x5a 5M 1536",
        "write -P 0x44 12k 8k",
        "write -z 2044k 8k",  # across two L2 tables
        "write -P 0x66 4M 4k",
    )
    src, header, _ = open_layer(top)
    assert header.cluster_size == 4096
    allocations = check_bytes(top, tmp_path)
    assert allocations[-1].end == size and allocations[-1].kind is Kind.DATA
    # One read for the header, one for the L1 table, one per L2 table (three of them).
    assert len(src.reads) == 1 + 1 + 3


def test_extended_l2_subclusters(tmp_path: Path) -> None:
    base = create(tmp_path / "base.qcow2", "4M", "extended_l2=on")
    qemu_io(base, "write -P 0x01 0 4M")
    top = create(tmp_path / "top.qcow2", "4M", "extended_l2=on", backing=base)
    qemu_io(
        top,
        "write -P 0x77 4k 8k",  # subclusters of 2 KiB
        "write -z 32k 4k",
        "write -P 0x78 64k 64k",
        "write -z 1M 64k",
        "write -P 0x79 2M 2k",
        "write -z 2050k 2k",
    )
    _, header, _ = open_layer(top)
    assert header.extended_l2
    allocations = check_bytes(top, tmp_path)
    assert (4 * KiB, 8 * KiB, Kind.DATA) in [(a.start, a.length, a.kind) for a in allocations]


def patch(image: Path, offset: int, fmt: str, update: Callable[[int], int]) -> None:
    """Change one header field of a real image."""
    with image.open("r+b") as f:
        f.seek(offset)
        (old,) = struct.unpack(fmt, f.read(struct.calcsize(fmt)))
        f.seek(offset)
        f.write(struct.pack(fmt, update(old)))


@pytest.mark.parametrize(
    ("offset", "fmt", "update", "message"),
    [
        (0, ">I", lambda _: 0x51464900, "is not a qcow2 image"),
        (4, ">I", lambda _: 4, "version 4"),
        (32, ">I", lambda _: 1, "encrypted"),
        (72, ">Q", lambda old: old | 1 << 1, "marked corrupt"),
        (72, ">Q", lambda old: old | 1 << 2, "external data file"),
        (72, ">Q", lambda old: old | 1 << 9, "bits 0x200"),
        (20, ">I", lambda _: 30, "cluster_bits 30"),
    ],
)
def test_refusals(
    tmp_path: Path, offset: int, fmt: str, update: Callable[[int], int], message: str
) -> None:
    image = create(tmp_path / "disk.qcow2", "1M")
    patch(image, offset, fmt, update)
    with pytest.raises(Qcow2Error, match=message) as caught:
        read_header(LocalFile(image), "volume v1 on host h1")
    assert "volume v1 on host h1" in str(caught.value)
    assert caught.value.hint


def test_dirty_bit_is_fine(tmp_path: Path) -> None:
    image = create(tmp_path / "disk.qcow2", "1M")
    qemu_io(image, "write -P 0x42 0 64k")
    patch(image, 72, ">Q", lambda old: old | 1)
    _, _, allocations = open_layer(image)
    assert [a.kind for a in allocations] == [Kind.DATA]


def test_truncated_l2_table(tmp_path: Path) -> None:
    image = create(tmp_path / "disk.qcow2", "1M")
    qemu_io(image, "write -P 0x42 0 64k")
    _, header, _ = open_layer(image)
    with image.open("r+b") as f:
        f.truncate(header.l1_table_offset + header.cluster_size + 100)  # L2 table comes next
    with pytest.raises(Qcow2Error, match="runs past the end of the file"):
        map_layer(LocalFile(image), header, name="disk")


def test_is_qcow2_and_bad_compressed_data(tmp_path: Path) -> None:
    image = create(tmp_path / "disk.qcow2", "1M")
    assert is_qcow2(image.read_bytes()[:4])
    assert not is_qcow2(b"\0" * 512)
    header = read_header(LocalFile(image), "disk")
    with pytest.raises(Qcow2Error, match="does not decompress"):
        inflate(header, b"\xff" * 100)


# The stream writer.


def write_image(
    path: Path, size: int, writes: list[tuple[int, bytes]], threads: int = 1
) -> tuple[int, LocalWriter]:
    out = LocalWriter(path)
    writer = Qcow2StreamWriter(out, size)
    if threads == 1:
        for offset, data in writes:
            writer.write(offset, data)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda w: writer.write(*w), writes))
    total = writer.close()
    out.close()
    return total, out


def expected_raw(path: Path, size: int, writes: list[tuple[int, bytes]]) -> Path:
    raw = bytearray(size)
    for offset, data in writes:
        raw[offset : offset + len(data)] = data
    path.write_bytes(raw)
    return path


def assert_valid_copy(image: Path, raw: Path) -> None:
    run("qemu-img", "check", "-f", "qcow2", str(image))  # exit status 0: no errors, no leaks
    run("qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(image), str(raw))


def random_writes(size: int, seed: int, chunk: int = 4 * CLUSTER) -> list[tuple[int, bytes]]:
    """Cluster-aligned chunks in random order: some random, some all zero, some half zero."""
    rng = random.Random(seed)
    writes = []
    for offset in range(0, size, chunk):
        length = min(chunk, size - offset)
        roll = rng.random()
        if roll < 0.2:
            continue
        data = bytes(length) if roll < 0.4 else rng.randbytes(length)
        if 0.4 <= roll < 0.5 and length > CLUSTER:
            data = bytes(CLUSTER) + data[CLUSTER:]
        writes.append((offset, data))
    rng.shuffle(writes)
    return writes


@pytest.mark.parametrize("size", [8 * MiB, 3 * MiB + 4608])
def test_writer_makes_a_valid_image(tmp_path: Path, size: int) -> None:
    writes = random_writes(size, seed=size)
    image = tmp_path / "out.qcow2"
    total, _ = write_image(image, size, writes)
    assert total == image.stat().st_size
    data_bytes = sum(len(d) for _, d in writes)
    assert total <= qcow2_size_bound(size, data_bytes)
    assert_valid_copy(image, expected_raw(tmp_path / "expected.raw", size, writes))
    info = json.loads(run("qemu-img", "info", "--output=json", str(image)))
    assert info["virtual-size"] == size and "backing-filename" not in info
    # Our own reader sees what the writer wrote, zero clusters left unallocated.
    _, _, allocations = open_layer(image)
    assert all(a.kind is Kind.DATA for a in allocations)
    mapped = sum(a.length for a in allocations)
    nonzero = {
        o + p for o, d in writes for p in range(0, len(d), CLUSTER) if any(d[p : p + CLUSTER])
    }
    assert mapped == sum(min(CLUSTER, size - o) for o in nonzero)


def test_writer_rewrites_replace_clusters(tmp_path: Path) -> None:
    size = 2 * MiB
    rng = random.Random(3)
    first = [(0, rng.randbytes(MiB)), (MiB, rng.randbytes(MiB))]
    second = [(64 * KiB, bytes(128 * KiB)), (MiB, rng.randbytes(64 * KiB)), (0, bytes(CLUSTER))]
    image = tmp_path / "out.qcow2"
    total, _ = write_image(image, size, first + second)
    assert total == (1 + 32 + 1 + 1 + 1 + 1) * CLUSTER  # no new host clusters for the rewrites
    assert_valid_copy(image, expected_raw(tmp_path / "expected.raw", size, first + second))


def test_writer_with_threads(tmp_path: Path) -> None:
    size = 32 * MiB
    writes = random_writes(size, seed=11, chunk=MiB)
    image = tmp_path / "out.qcow2"
    write_image(image, size, writes, threads=8)
    assert_valid_copy(image, expected_raw(tmp_path / "expected.raw", size, writes))


def test_writer_empty_and_huge_sparse_images(tmp_path: Path) -> None:
    empty = tmp_path / "empty.qcow2"
    total, _ = write_image(empty, 0, [])
    run("qemu-img", "check", "-f", "qcow2", str(empty))
    assert total == qcow2_size_bound(0, 0)
    # 10 TiB: an L1 table of three clusters, data at both ends.
    size = 10 * 1024 * GiB
    writes = [(0, b"\x01" * CLUSTER), (size - CLUSTER, b"\x02" * CLUSTER)]
    writes.append((5 * GiB, b"\x03" * CLUSTER))
    image = tmp_path / "huge.qcow2"
    write_image(image, size, writes)
    run("qemu-img", "check", "-f", "qcow2", str(image))
    _, header, allocations = open_layer(image)
    assert header.l1_size == 20480
    assert [(a.start, a.kind) for a in allocations] == [(o, Kind.DATA) for o, _ in sorted(writes)]
    assert image.read_bytes()[allocations[1].host_offset] == 3


def test_writer_more_than_one_refcount_block(tmp_path: Path) -> None:
    """40000 data clusters (2.4 GiB of file) need two refcount blocks; the data is not
    actually written to disk (the file stays sparse), only the metadata."""
    clusters = 40000
    size = clusters * CLUSTER
    image = tmp_path / "big.qcow2"
    out = LocalWriter(image)
    writer = Qcow2StreamWriter(out, size)
    out.skip = True
    payload = b"\x07" * (16 * CLUSTER)
    for offset in range(0, size, len(payload)):
        writer.write(offset, payload)
    out.skip = False
    total = writer.close()
    out.close()
    assert total == qcow2_size_bound(size, size) == image.stat().st_size
    run("qemu-img", "check", "-f", "qcow2", str(image))
    _, _, allocations = open_layer(image)
    assert [(a.start, a.length, a.host_offset) for a in allocations] == [(0, size, CLUSTER)]


def test_writer_refuses_bad_writes(tmp_path: Path) -> None:
    out = LocalWriter(tmp_path / "out.qcow2")
    writer = Qcow2StreamWriter(out, MiB + 512)
    with pytest.raises(ValueError, match="aligned"):
        writer.write(512, bytes(CLUSTER))
    with pytest.raises(ValueError, match="inside the virtual size"):
        writer.write(MiB, bytes(CLUSTER))
    with pytest.raises(ValueError, match="only the last write"):
        writer.write(0, bytes(1000))
    writer.write(MiB, b"\x01" * 512)  # the short last cluster
    writer.close()
    with pytest.raises(ValueError, match="after close"):
        writer.write(0, bytes(CLUSTER))
    out.close()


def test_size_bound() -> None:
    assert qcow2_size_bound(GiB, 0) == 4 * CLUSTER  # header, L1, refcount block, table
    # A full 1 TiB disk: data, 2048 L2 tables, an L1 of 2048 entries, 2 refcount blocks...
    tib = 1024 * GiB
    clusters = tib // CLUSTER
    bound = qcow2_size_bound(tib, tib)
    assert bound == (1 + clusters + 2048 + 1 + 513 + 1) * CLUSTER
    assert qcow2_size_bound(tib, 2 * tib) == bound
