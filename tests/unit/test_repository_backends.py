"""One contract for every repository backend: each new backend is one more fixture param."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.repository import Backend, LocalBackend, MemoryBackend, ObjectNotFound


@pytest.fixture(params=["memory", "local"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "memory":
        yield MemoryBackend()
    else:
        yield LocalBackend(tmp_path / "repo")


def test_is_a_backend(backend: Backend) -> None:
    assert isinstance(backend, Backend)
    assert backend.location


def test_save_then_load(backend: Backend) -> None:
    backend.save("chunks/ab/abcdef", b"hello world")
    assert backend.load("chunks/ab/abcdef") == b"hello world"
    assert backend.exists("chunks/ab/abcdef")
    assert backend.stat("chunks/ab/abcdef") == 11


def test_load_a_range(backend: Backend) -> None:
    backend.save("obj", b"0123456789")
    assert backend.load("obj", offset=3, length=4) == b"3456"
    assert backend.load("obj", offset=8) == b"89"
    assert backend.load("obj", offset=8, length=100) == b"89"


def test_save_replaces(backend: Backend) -> None:
    backend.save("manifests/b1", b"old")
    backend.save("manifests/b1", b"new!")
    assert backend.load("manifests/b1") == b"new!"
    assert list(backend.list("manifests/")) == ["manifests/b1"]


def test_empty_object(backend: Backend) -> None:
    backend.save("empty", b"")
    assert backend.load("empty") == b""
    assert backend.stat("empty") == 0


def test_missing_objects_raise_not_found(backend: Backend) -> None:
    assert not backend.exists("nope")
    for call in (
        lambda: backend.load("nope"),
        lambda: backend.stat("nope"),
        lambda: backend.remove("nope"),
        lambda: backend.load("chunks/zz/nope"),
    ):
        with pytest.raises(ObjectNotFound) as info:
            call()
        assert "nope" in str(info.value)


def test_list_by_prefix(backend: Backend) -> None:
    names = ["chunks/ab/ab01", "chunks/ab/ab02", "chunks/cd/cd01", "manifests/x", "config"]
    for name in names:
        backend.save(name, b"x")
    assert sorted(backend.list("chunks/")) == names[:3]
    assert sorted(backend.list("chunks/ab/")) == names[:2]
    assert sorted(backend.list("chunks/ab/ab0")) == names[:2]
    assert sorted(backend.list("manifests/")) == ["manifests/x"]
    assert sorted(backend.list()) == sorted(names)
    assert list(backend.list("index/")) == []


def test_remove(backend: Backend) -> None:
    backend.save("manifests/a", b"1")
    backend.remove("manifests/a")
    assert not backend.exists("manifests/a")
    assert list(backend.list("manifests/")) == []


@pytest.mark.parametrize("name", ["", "../x", "a/../b", "/abs", "a//b", ".hidden", "a/.tmp-x"])
def test_bad_names_are_refused(backend: Backend, name: str) -> None:
    with pytest.raises(ConfigError):
        backend.save(name, b"x")


def test_concurrent_saves_of_one_name(backend: Backend) -> None:
    data = bytes(range(256)) * 4096
    errors: list[BaseException] = []

    def save() -> None:
        try:
            for _ in range(5):
                backend.save("chunks/00/same", data)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=save) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert backend.load("chunks/00/same") == data
    assert list(backend.list("chunks/")) == ["chunks/00/same"]


def test_readers_never_see_partial_objects(backend: Backend) -> None:
    big, small = b"a" * (1 << 20), b"b" * 100
    backend.save("obj", small)
    seen: set[int] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(len(backend.load("obj")))

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(20):
        backend.save("obj", big)
        backend.save("obj", small)
    stop.set()
    reader.join()
    assert seen <= {len(big), len(small)}


def test_local_leaves_no_temporary_files(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    backend.save("chunks/ab/abc", b"x")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ab", "abc", "chunks"]
    assert (tmp_path / "chunks" / "ab" / "abc").read_bytes() == b"x"


def test_local_removes_stale_temporaries(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    backend.save("chunks/ab/abc", b"x")
    stale, fresh = tmp_path / "chunks" / "ab" / ".tmp-old", tmp_path / "chunks" / ".tmp-new"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"being written")
    os.utime(stale, (1, 1))
    assert backend.remove_stale_temporaries(older_than_s=600) == 1
    assert not stale.exists() and fresh.exists() and backend.exists("chunks/ab/abc")


def test_sync_after_saves_keeps_them(backend: Backend) -> None:
    backend.save("chunks/cd/cdef01", b"chunk")
    backend.save("manifests/b2", b"manifest")
    backend.sync()
    backend.sync()  # nothing left to sync is fine
    assert backend.load("chunks/cd/cdef01") == b"chunk"
