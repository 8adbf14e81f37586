"""Chunks: content addressing, compression, zero detection, corruption."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.errors import ConfigError
from shared.repository import CorruptionError, MemoryBackend, ObjectNotFound, is_zero
from shared.repository.chunks import ChunkStore, chunk_name
from shared.repository.codec import RAW, ZSTD, decode, encode


@pytest.fixture
def store() -> ChunkStore:
    return ChunkStore(MemoryBackend())


def test_digest_is_sha256_and_names_the_chunk(store: ChunkStore) -> None:
    data = os.urandom(10_000)
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.backend.exists(f"chunks/{digest[:2]}/{digest}")
    assert store.get(digest) == data


def test_put_accepts_memoryview(store: ChunkStore) -> None:
    buffer = bytearray(os.urandom(8192))
    digest = store.put(memoryview(buffer)[4096:])
    assert store.get(digest) == bytes(buffer[4096:])


def test_put_is_idempotent(store: ChunkStore) -> None:
    data = b"x" * 5000
    saves: list[str] = []
    original = store.backend.save

    def counting_save(name: str, blob: bytes) -> None:
        saves.append(name)
        original(name, blob)

    store.backend.save = counting_save  # type: ignore[method-assign,assignment]
    assert store.put(data) == store.put(data)
    assert len(saves) == 1


def test_compressible_data_is_compressed(store: ChunkStore) -> None:
    data = b"abcd" * 100_000
    digest = store.put(data)
    blob = store.backend.load(chunk_name(digest))
    assert blob[:1] == ZSTD and len(blob) < len(data) // 10


def test_random_data_is_stored_raw(store: ChunkStore) -> None:
    data = os.urandom(1 << 20)
    blob = store.backend.load(chunk_name(store.put(data)))
    assert blob[:1] == RAW and blob[1:] == data


def test_small_and_tail_sizes_round_trip() -> None:
    for data in (b"\x01", os.urandom(100), b"a" * 65_537, os.urandom(65_536) + bytes(70_000)):
        assert decode(encode(data), "x") == data


def test_zero_chunks_are_refused(store: ChunkStore) -> None:
    with pytest.raises(ValueError, match="zero"):
        store.put(bytes(4096))
    assert list(store.digests()) == []


def test_is_zero() -> None:
    assert is_zero(b"")
    assert is_zero(bytes(5 << 20))
    assert is_zero(memoryview(bytearray(9 << 20)))
    assert is_zero(bytearray(100))
    for position in (0, 1, 4 << 20, (9 << 20) - 1, 6_000_000):
        data = bytearray(9 << 20)
        data[position] = 1
        assert not is_zero(data)
        assert not is_zero(bytes(data))
        assert not is_zero(memoryview(data))


def test_flipped_bit_is_detected(store: ChunkStore) -> None:
    data = os.urandom(4096)
    digest = store.put(data)
    name = chunk_name(digest)
    blob = bytearray(store.backend.load(name))
    blob[100] ^= 0x01
    store.backend.save(name, bytes(blob))
    with pytest.raises(CorruptionError, match="no longer matches its digest"):
        store.get(digest)


def test_damaged_compressed_chunk_is_detected(store: ChunkStore) -> None:
    digest = store.put(b"hello " * 10_000)
    name = chunk_name(digest)
    store.backend.save(name, store.backend.load(name)[:20])
    with pytest.raises(CorruptionError, match="corrupt"):
        store.get(digest)


def test_unknown_header_is_detected(store: ChunkStore) -> None:
    digest = store.put(b"data" * 100)
    store.backend.save(chunk_name(digest), b"\x07garbage")
    with pytest.raises(CorruptionError, match="unknown header"):
        store.get(digest)


def test_missing_chunk(store: ChunkStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.get("0" * 64)
    assert not store.has("0" * 64)


def test_bad_digest_is_refused(store: ChunkStore) -> None:
    with pytest.raises(ConfigError):
        store.get("../../etc/passwd")


def test_parallel_puts_of_overlapping_data(store: ChunkStore) -> None:
    blocks = [os.urandom(64 * 1024) for _ in range(8)]
    with ThreadPoolExecutor(4) as pool:
        digests = list(pool.map(store.put, blocks * 4))
    assert sorted(set(digests)) == sorted(store.digests())
    for block, digest in zip(blocks, digests, strict=False):
        assert store.get(digest) == block
