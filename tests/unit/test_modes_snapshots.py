"""The snapshot steps of the snapshot-chain modes, against a fake engine: a re-delivered start
takes up the snapshot an earlier attempt made (found by its description when it was never
named), quiescing falls back without a guest agent, only the newest kept snapshot survives a
commit, and cleanup removes the job's snapshot and thaws even when the removal fails."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

import pytest

from shared.backup.layers import ChainBroken
from shared.engine.client import EngineClient
from shared.engine.errors import EngineOperationFailed, NoGuestAgent
from shared.engine.models import SnapshotInfo
from shared.engine.snapshots import description
from shared.modes import snapshots
from shared.modes.base import JobRun, Leftovers
from shared.modes.quiesce import FROZEN, NO_AGENT_WARNING
from shared.state import StateStore
from tests.unit.test_modes_image_transfer import VM, Events, FakeJournal, make_run


class SnapshotEngine:
    def __init__(self) -> None:
        self.events = Events()
        self.existing: list[SnapshotInfo] = []
        self.freeze_error: Exception | None = None
        self.remove_error: Exception | None = None
        self.created = 0

    def freeze(self, vm_id: str) -> None:
        self.events.add("freeze")
        if self.freeze_error:
            raise self.freeze_error

    def thaw(self, vm_id: str) -> None:
        self.events.add("thaw")

    def snapshots(self, vm_id: str) -> list[SnapshotInfo]:
        return list(self.existing)

    def create_snapshot(self, vm_id: str, disk_ids: list[str], text: str) -> str:
        self.created += 1
        snapshot_id = f"snap-{self.created}"
        self.events.add("snapshot", snapshot_id)
        self.existing.append(SnapshotInfo(snapshot_id, text, "ok"))
        return snapshot_id

    def wait_snapshot(self, vm_id: str, snapshot_id: str) -> None:
        self.events.add("wait", snapshot_id)

    def remove_snapshot(self, vm_id: str, snapshot_id: str) -> None:
        self.events.add("remove", snapshot_id)
        if self.remove_error:
            raise self.remove_error
        self.existing = [s for s in self.existing if s.id != snapshot_id]


def run_for(engine: SnapshotEngine, journal: FakeJournal, *, quiesce: bool = False) -> JobRun:
    return make_run(cast(Any, engine), journal, quiesce=quiesce)


def keeping(run: JobRun, keep: bool) -> JobRun:
    request = replace(run.context.request, keep_snapshot=keep)
    return replace(run, context=replace(run.context, request=request))


def test_begin_records_the_snapshot_before_and_after_asking_for_it() -> None:
    engine, journal = SnapshotEngine(), FakeJournal(Events())
    started = snapshots.begin(keeping(run_for(engine, journal), True))
    assert (started.handle, started.anchor) == ("snap-1", "snap-1")
    assert journal.events.items[:2] == [
        ("record", snapshots.SNAPSHOT, snapshots.CREATING + description("job-1")),
        ("record", snapshots.SNAPSHOT, "snap-1"),
    ]


def test_no_anchor_when_no_policy_keeps_the_snapshot() -> None:
    engine, journal = SnapshotEngine(), FakeJournal(Events())
    assert snapshots.begin(keeping(run_for(engine, journal), False)).anchor is None


def test_a_redelivered_begin_finds_the_snapshot_it_never_named() -> None:
    engine = SnapshotEngine()
    engine.existing = [SnapshotInfo("snap-9", description("job-1"), "ok")]
    creating = {snapshots.SNAPSHOT: snapshots.CREATING + description("job-1")}
    journal = FakeJournal(Events(), creating)
    started = snapshots.begin(run_for(engine, journal))
    assert started.handle == "snap-9" and engine.created == 0
    assert journal.recorded(snapshots.SNAPSHOT) == "snap-9"


def test_a_redelivered_begin_whose_snapshot_is_gone_takes_a_new_one() -> None:
    engine = SnapshotEngine()
    journal = FakeJournal(Events(), {snapshots.SNAPSHOT: "snap-gone"})
    started = snapshots.begin(run_for(engine, journal))
    assert started.handle == "snap-1"
    assert any("snap-gone of an earlier attempt is gone" in w for w in journal.warnings())


def test_without_a_guest_agent_the_snapshot_is_taken_unquiesced_with_a_warning() -> None:
    engine, journal = SnapshotEngine(), FakeJournal(Events())
    engine.freeze_error = NoGuestAgent("no agent")
    started = snapshots.begin(run_for(engine, journal, quiesce=True))
    assert started.handle == "snap-1"
    assert journal.warnings() == [NO_AGENT_WARNING]
    assert "thaw" not in engine.events.names()


def test_after_commit_keeps_only_the_newest_drover_snapshot() -> None:
    engine, journal = SnapshotEngine(), FakeJournal(Events())
    engine.existing = [
        SnapshotInfo("old", description("job-0"), "ok"),
        SnapshotInfo("operator", "before the upgrade", "ok"),
        SnapshotInfo("new", description("job-1"), "ok"),
    ]
    run = run_for(engine, journal)
    snapshots.after_commit(replace(run, context=run.context.started("new", "new")))
    assert [s.id for s in engine.existing] == ["operator", "new"]


def test_cleanup_thaws_even_when_the_removal_fails() -> None:
    engine = SnapshotEngine()
    engine.existing = [SnapshotInfo("snap-1", description("job-1"), "ok")]
    engine.remove_error = EngineOperationFailed("merge failed")
    recorded = {snapshots.SNAPSHOT: "snap-1", FROZEN: "yes"}
    leftovers = Leftovers(cast(EngineClient, engine), VM, [], recorded, "m", cast(StateStore, None))
    with pytest.raises(EngineOperationFailed):
        snapshots.cleanup(leftovers)
    assert engine.events.names() == ["remove", "thaw"]


def test_cleanup_finds_a_snapshot_recorded_only_by_its_description() -> None:
    engine = SnapshotEngine()
    engine.existing = [SnapshotInfo("snap-7", description("job-1"), "locked")]
    recorded = {snapshots.SNAPSHOT: snapshots.CREATING + description("job-1")}
    leftovers = Leftovers(cast(EngineClient, engine), VM, [], recorded, "m", cast(StateStore, None))
    snapshots.cleanup(leftovers)
    assert engine.existing == []


def test_a_chain_without_the_kept_volume_drops_the_kept_snapshot() -> None:
    engine, journal = SnapshotEngine(), FakeJournal(Events())
    engine.existing = [SnapshotInfo("kept", description("job-0"), "ok")]
    run = make_run(cast(Any, engine), journal, kind="incremental", from_anchor="kept")
    with (
        pytest.raises(ChainBroken, match="the next backup of the VM is a full one"),
        snapshots.stale_anchor_dropped(run),
    ):
        raise ChainBroken("volume v0 of the kept snapshot is not below volume v7")
    assert engine.existing == []
