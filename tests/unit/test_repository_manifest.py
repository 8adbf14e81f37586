"""Manifests: round trips, validation, the resolved map of an incremental."""

from __future__ import annotations

import pytest

from shared.errors import ConfigError
from shared.repository import DiskManifest, Manifest, resolve_chunks

D1, D2, D3 = "1" * 64, "2" * 64, "3" * 64


def make_disk(**overrides: object) -> DiskManifest:
    values: dict[str, object] = {
        "disk_id": "disk-1",
        "name": "vm1_Disk1",
        "size": 10 * 4096 + 100,
        "format": "cow",
        "chunk_size": 4096,
        "chunks": {0: D1, 3: D2, 10: D3},
    }
    values.update(overrides)
    return DiskManifest(**values)  # type: ignore[arg-type]


def make_manifest(**overrides: object) -> Manifest:
    values: dict[str, object] = {
        "backup_id": "b-20240101",
        "vm_id": "vm-1",
        "vm_name": "vm1",
        "kind": "full",
        "parent_id": None,
        "mode": "image_transfer",
        "created_at": "2024-01-01T00:00:00Z",
        "ovf": "<ovf:Envelope/>",
        "checkpoint_id": "cp-1",
        "disks": [make_disk()],
        "warnings": ["quiesce failed: no guest agent"],
        "stats": {"bytes": 123},
    }
    values.update(overrides)
    return Manifest(**values)  # type: ignore[arg-type]


def test_round_trip() -> None:
    manifest = make_manifest()
    data = manifest.to_dict()
    assert data["disks"][0]["chunks"] == {"0": D1, "3": D2, "10": D3}
    assert Manifest.from_dict(data) == manifest


def test_unknown_fields_are_ignored() -> None:
    data = make_manifest().to_dict()
    data["future_field"] = 1
    data["disks"][0]["future"] = 2
    assert Manifest.from_dict(data) == make_manifest()


def test_chunk_geometry() -> None:
    disk = make_disk()
    assert disk.chunk_count == 11
    assert disk.chunk_length(0) == 4096
    assert disk.chunk_length(10) == 100


def test_summary_has_no_chunks_or_ovf() -> None:
    summary = make_manifest().summary().to_dict()
    assert "ovf" not in summary and "chunks" not in summary["disks"][0]
    assert summary["disks"][0]["size"] == 10 * 4096 + 100


@pytest.mark.parametrize(
    "overrides",
    [
        {"kind": "differential"},
        {"kind": "incremental", "parent_id": None},
        {"backup_id": "../etc"},
        {"backup_id": ""},
    ],
)
def test_invalid_manifests(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        make_manifest(**overrides)


@pytest.mark.parametrize(
    "overrides", [{"format": "qcow2"}, {"chunks": {11: D1}}, {"chunks": {-1: D1}}, {"size": -1}]
)
def test_invalid_disks(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        make_disk(**overrides)


def test_disk_lookup() -> None:
    manifest = make_manifest()
    assert manifest.disk("disk-1").name == "vm1_Disk1"
    with pytest.raises(ConfigError, match="disk-1"):
        manifest.disk("disk-9")


def test_resolve_chunks_overlays_changes() -> None:
    parent = {0: D1, 1: D1, 2: D2}
    changed = {1: D3, 2: None, 5: D2}
    assert resolve_chunks(parent, changed, size=6 * 4096, chunk_size=4096) == {
        0: D1,
        1: D3,
        5: D2,
    }
    assert parent == {0: D1, 1: D1, 2: D2}


def test_resolve_chunks_drops_chunks_of_a_shrunk_disk() -> None:
    assert resolve_chunks({0: D1, 3: D2}, {}, size=2 * 4096, chunk_size=4096) == {0: D1}
