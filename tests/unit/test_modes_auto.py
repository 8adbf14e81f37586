"""Choosing a transfer mode: an explicit mode is kept (when Drover has it), `auto` chooses
from the VM's facts and writes down why; `mode_for` refuses what this version cannot do."""

from __future__ import annotations

import pytest

from shared import modes
from shared.engine.models import EngineVersion
from shared.errors import ConfigError
from shared.modes import AVAILABLE_MODES, MODES, PLANNED_MODES, mode_for
from shared.modes.auto import BACKUP_API, ModeChoice, VmFacts, choose_mode
from shared.modes.image_transfer import ImageTransferMode

ENGINE_45 = EngineVersion(4, 5)


def facts(
    version: EngineVersion = ENGINE_45,
    formats: tuple[str, ...] = ("cow",),
    storage: tuple[str, ...] = ("nfs",),
    proxy_worker: bool = False,
) -> VmFacts:
    return VmFacts(
        engine_version=version,
        disk_formats=formats,
        storage_types=storage,
        proxy_worker=proxy_worker,
    )


# explicit modes ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", AVAILABLE_MODES)
def test_an_explicit_available_mode_is_kept(mode: str) -> None:
    choice = choose_mode(mode, facts())

    assert choice == ModeChoice(mode, f"mode {mode} set by the policy")


def test_an_explicit_ssh_mode_does_not_depend_on_the_facts() -> None:
    choice = choose_mode("ssh", facts(EngineVersion(0, 0), (), (), False))

    assert choice == ModeChoice("ssh", "mode ssh set by the policy")


@pytest.fixture
def planned(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every mode of the seed exists: a documented mode that does not yet is made up here."""
    monkeypatch.setattr(modes, "PLANNED_MODES", ("future_mode",))
    return "future_mode"


def test_an_explicit_planned_mode_is_not_available(planned: str) -> None:
    mode = planned
    with pytest.raises(ConfigError, match=f"mode {mode} is not available") as raised:
        choose_mode(mode, facts())

    assert "image_transfer" in raised.value.hint


@pytest.mark.parametrize("mode", ["snapshot", "IMAGE_TRANSFER", "", "image-transfer"])
def test_an_unknown_mode_is_refused(mode: str) -> None:
    with pytest.raises(ConfigError, match="unknown mode") as raised:
        choose_mode(mode, facts())

    assert repr(mode) in raised.value.message
    assert "image_transfer" in raised.value.hint


# auto ------------------------------------------------------------------------------------


def test_auto_on_a_45_engine_chooses_image_transfer_and_says_why() -> None:
    choice = choose_mode(
        "auto",
        facts(
            EngineVersion(4, 5),
            formats=("raw", "cow", "raw"),
            storage=("nfs", "iscsi", "nfs"),
            proxy_worker=False,
        ),
    )

    assert choice.mode == "image_transfer"
    assert choice.reason == (
        "auto chose image_transfer: engine 4.5 has the backup API; "
        "2 raw disk(s) have no incremental tracking and are read in full; "
        "storage: iscsi, nfs; "
        "no proxy worker serves the cluster"
    )


def test_auto_keeps_image_transfer_where_a_proxy_worker_serves_the_cluster() -> None:
    """disk_attachment makes full backups only: auto keeps the mode that makes incrementals,
    and says it saw the proxy."""
    choice = choose_mode("auto", facts(proxy_worker=True))

    assert (choice.mode, choice.snapshot_chain) == ("image_transfer", False)
    assert choice.reason == (
        "auto chose image_transfer: engine 4.5 has the backup API; storage: nfs; "
        "a proxy worker serves the cluster; disk_attachment (full only) is not chosen by auto"
    )
    assert "not available" not in choice.reason


def test_an_explicit_disk_attachment_is_kept_once_it_has_landed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if "disk_attachment" not in MODES:
        monkeypatch.setitem(MODES, "disk_attachment", MODES["ssh"])  # any mode will do here
    choice = choose_mode("disk_attachment", facts(EngineVersion(4, 3), proxy_worker=False))

    assert choice == ModeChoice("disk_attachment", "mode disk_attachment set by the policy")


def test_auto_leaves_out_raw_disks_and_storage_when_there_are_none() -> None:
    choice = choose_mode("auto", facts(formats=("cow", "cow"), storage=()))

    assert "raw" not in choice.reason
    assert "storage:" not in choice.reason
    assert choice.reason == (
        "auto chose image_transfer: engine 4.5 has the backup API; "
        "no proxy worker serves the cluster"
    )


def test_auto_accepts_the_first_engine_with_the_backup_api() -> None:
    choice = choose_mode("auto", facts(BACKUP_API))

    assert EngineVersion(4, 4) == BACKUP_API
    assert choice.mode == "image_transfer"
    assert "engine 4.4" in choice.reason


@pytest.mark.parametrize("version", [EngineVersion(4, 3), EngineVersion(4, 2), EngineVersion(3, 6)])
def test_auto_on_an_engine_without_the_backup_api_uses_snapshot_chains(
    version: EngineVersion,
) -> None:
    choice = choose_mode("auto", facts(version))

    assert choice.mode == "image_transfer"
    assert choice.snapshot_chain
    assert f"snapshot chains: engine {version} has no backup API (4.4+)" in choice.reason


def test_explicit_image_transfer_on_a_43_engine_uses_snapshot_chains() -> None:
    choice = choose_mode("image_transfer", facts(EngineVersion(4, 3)))

    assert (choice.mode, choice.snapshot_chain) == ("image_transfer", True)
    assert choice.reason.startswith("mode image_transfer set by the policy; snapshot chains")


def test_a_policy_can_ask_image_transfer_for_snapshot_chains() -> None:
    choice = choose_mode("image_transfer", facts(), snapshot_chain=True)

    assert (choice.mode, choice.snapshot_chain) == ("image_transfer", True)
    assert choice.reason == "mode image_transfer set by the policy; snapshot chains by policy"


# mode_for --------------------------------------------------------------------------------


def test_mode_for_returns_the_modes_implementation() -> None:
    mode = mode_for("image_transfer")

    assert isinstance(mode, ImageTransferMode)
    assert mode is MODES["image_transfer"]
    assert mode.name == "image_transfer"
    assert mode.incremental is True


def test_mode_for_refuses_a_planned_mode(planned: str) -> None:
    mode = planned
    with pytest.raises(ConfigError, match="not available in this version") as raised:
        mode_for(mode)

    assert raised.value.hint == f"use one of: {', '.join(AVAILABLE_MODES)}"


def test_mode_for_does_not_resolve_auto() -> None:
    """`auto` is resolved by choose_mode when the job is queued; requests carry the result."""
    with pytest.raises(ConfigError, match="unknown mode 'auto'"):
        mode_for("auto")


def test_planned_and_available_modes_do_not_overlap() -> None:
    assert set(PLANNED_MODES).isdisjoint(AVAILABLE_MODES)
    assert tuple(MODES) == AVAILABLE_MODES
