"""`drover bench ssh`: a full backup in mode ssh against OpenSSH's `ssh HOST cat VOLUME > file`.

Both read the same volume file on the same host in the same run: the bench disk's volume as of
a disk-only snapshot (read-only while the snapshot exists), the one file a full backup of a
fresh disk reads (each job's chain is checked to be that volume alone). Ours is the transfer
phase of a backup job by the fleet, in mode ssh without and with netcat: from the moment the
volume is mapped to the last chunk recorded, the clusters read by the agents, every chunk hashed,
compressed when it pays and stored (fdatasync'ed) in a new repository each round. The reference
is OpenSSH's client (its default cipher, the lab's key, the host key pinned, no user config)
running `cat` of that volume on the same host into a file on the repositories' filesystem,
timed from its start to its exit. The requirement: with netcat, ours at least 0.9x the
reference. For comparison only, the reference is also timed with the cipher our SSH session
negotiates (`reference_same_cipher`).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.fleet import MANAGER, Fleet
from bench.transfer import Measure
from shared.engine.client import EngineClient
from shared.settings import get_settings
from shared.sources.ssh_volumes import domain_dir
from shared.ssh.credentials import pick_host
from shared.ssh.session import FAST_CIPHERS
from shared.state import JobState, JobStatus

REFERENCE = "ssh HOST cat VOLUME > file"
OUR_CIPHER = FAST_CIPHERS[0]  # what our SSH session negotiates with an OpenSSH host
SAME_CIPHER = f"ssh -c {OUR_CIPHER} HOST cat VOLUME > file"
REQUIRED_NETCAT_RATIO = 0.9  # with netcat, ours must copy at least this fraction as fast
REFERENCE_TIMEOUT_S = 1800.0
SNAPSHOT_DESCRIPTION = "bench: the reference reads this snapshot's volume"
_CIPHER = re.compile(r"kex: server->client cipher: (\S+)")


@dataclass(frozen=True)
class VolumeFile:
    """The bench disk's volume as of a snapshot, where both sides read it."""

    host: dict[str, Any]  # the lab host (lab.json's entry) our job reads from
    path: str
    volume_id: str
    format: str

    def describe(self) -> dict[str, Any]:
        return {
            "host": self.host["name"],
            "volume_id": self.volume_id,
            "format": self.format,
            "path": self.path,
        }


@contextmanager
def snapshot_volume(fleet: Fleet, vm: Any, disk_id: str) -> Iterator[VolumeFile]:
    """A disk-only snapshot of the disk for the block: its volume's file on the host our job
    picks (`pick_host`), at the path our job computes (`domain_dir`)."""
    engine = EngineClient(fleet.connection, ca_file=fleet.lab["engine"]["ca_file"])
    access = pick_host(engine, fleet.store, MANAGER, engine.vm(vm.id))
    snapshot_id = engine.create_snapshot(vm.id, [disk_id], SNAPSHOT_DESCRIPTION)
    try:
        volume = engine.snapshot_volumes(vm.id, snapshot_id)[disk_id]
        domain = next(d for d in engine.storage_domains() if d.id == volume.storage_domain_id)
        where = domain_dir(access, domain)
        if where.block:
            raise RuntimeError(f"the bench disk {disk_id} must be on a file domain")
        host = next(h for h in fleet.lab["hosts"] if h["name"] == access.name)
        path = where.volume_path(disk_id, volume.volume_id)
        yield VolumeFile(host, path, volume.volume_id, volume.format)
    finally:
        engine.remove_snapshot(vm.id, snapshot_id)


def ssh_argv(host: dict[str, Any], known_hosts: Path, *command: str, cipher: str = "") -> list[str]:
    """OpenSSH's client as an operator runs it: the host key pinned, no user config, its
    default cipher unless `cipher` is given."""
    return [
        "ssh",
        *(["-c", cipher] if cipher else []),
        "-F",
        "none",
        "-p",
        str(host["ssh_port"]),
        "-i",
        host["ssh_key"],
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        f"{host['ssh_user']}@{host['address']}",
        shlex.join(command),
    ]


def known_hosts_file(host: dict[str, Any], directory: Path) -> Path:
    """A known_hosts file holding the lab host's key (`[address]:port type base64`)."""
    path = directory / f"known_hosts-{host['name']}"
    path.write_text(f"[{host['address']}]:{host['ssh_port']} {host['ssh_host_key']}\n")
    return path


def reference_setup(volume: VolumeFile, known_hosts: Path) -> tuple[str, float]:
    """The cipher OpenSSH's client negotiates with the host (its defaults), and how long
    `ssh HOST true` takes: the part of the reference's time that moves no data."""
    argv = ssh_argv(volume.host, known_hosts, "true")
    started = time.monotonic()
    done = subprocess.run([argv[0], "-v", *argv[1:]], capture_output=True, text=True, timeout=60)
    seconds = time.monotonic() - started
    found = _CIPHER.search(done.stderr)
    return (found.group(1) if found else "unknown"), seconds


def reference(volume: VolumeFile, known_hosts: Path, target: Path, cipher: str = "") -> Measure:
    """`ssh HOST cat VOLUME > target`, timed from the start of ssh to its exit."""
    argv = ssh_argv(volume.host, known_hosts, "cat", volume.path, cipher=cipher)
    os.sync()  # earlier writes' writeback must not slow this measure down
    try:
        with target.open("wb") as out:
            started = time.monotonic()
            done = subprocess.run(
                argv, stdout=out, stderr=subprocess.PIPE, timeout=REFERENCE_TIMEOUT_S
            )
            seconds = time.monotonic() - started
        if done.returncode != 0:
            error = done.stderr.decode(errors="replace").strip()[-500:]
            raise RuntimeError(f"the reference `ssh ... cat` failed ({done.returncode}): {error}")
        return Measure(seconds, target.stat().st_size)
    finally:
        target.unlink(missing_ok=True)


def ours(
    fleet: Fleet, vm: Any, disk_id: str, repository: Path, netcat: bool
) -> tuple[Measure, JobState]:
    """A full backup of the disk in mode ssh into a new repository (removed after)."""
    os.sync()
    try:
        job = fleet.backup(
            vm,
            [disk_id],
            str(repository),
            mode="ssh",
            netcat=netcat,
            incremental=False,
            keep_snapshot=False,
            quiesce=False,
        )
    finally:
        shutil.rmtree(repository, ignore_errors=True)
    if job.status == JobStatus.FAILED:
        raise RuntimeError(f"the benchmark backup (netcat={netcat}) failed: {job.error}")
    disk = job.disks[0]
    return Measure(disk.updated_at - disk.started_at, disk.bytes_read), job


@dataclass
class SshRounds:
    """The best round of each: the reference, ours without and ours with netcat."""

    reference: Measure
    same_cipher: Measure  # the reference with the cipher our session uses
    plain: Measure
    netcat: Measure
    plain_job: JobState
    netcat_job: JobState
    volume: VolumeFile
    cipher: str
    connect_seconds: float  # `ssh HOST true`, the best of the rounds


def best_of_rounds(fleet: Fleet, vm: Any, disk_id: str, root: Path, rounds: int) -> SshRounds:
    """Alternate the reference, ours without and ours with netcat; keep each one's best.

    The reference's snapshot is removed before ours run, so each side reads a chain of one
    volume: the same file."""
    refs: list[Measure] = []
    same: list[Measure] = []
    plain: list[tuple[Measure, JobState]] = []
    netcat: list[tuple[Measure, JobState]] = []
    volumes: list[VolumeFile] = []
    setups: list[tuple[str, float]] = []
    for round_ in range(rounds):
        with snapshot_volume(fleet, vm, disk_id) as volume:
            known_hosts = known_hosts_file(volume.host, root)
            setups.append(reference_setup(volume, known_hosts))
            refs.append(reference(volume, known_hosts, root / "reference.qcow2"))
            same.append(reference(volume, known_hosts, root / "reference.qcow2", OUR_CIPHER))
            volumes.append(volume)
        plain.append(ours(fleet, vm, disk_id, root / f"repository-{round_}-ssh", False))
        netcat.append(ours(fleet, vm, disk_id, root / f"repository-{round_}-netcat", True))
        for _, job in (plain[-1], netcat[-1]):
            _check_same_volume(fleet, job, disk_id, volume)
    if len({v.path for v in volumes}) != 1:
        raise RuntimeError(f"the bench volume moved between rounds: {volumes}")
    best_plain, plain_job = _best_job(plain)
    best_netcat, netcat_job = _best_job(netcat)
    cipher, connect_seconds = min(setups, key=lambda setup: setup[1])
    return SshRounds(
        _best(refs),
        _best(same),
        best_plain,
        best_netcat,
        plain_job,
        netcat_job,
        volumes[0],
        cipher,
        connect_seconds,
    )


def _check_same_volume(fleet: Fleet, job: JobState, disk_id: str, volume: VolumeFile) -> None:
    """Our job read exactly the volume the reference read: a chain of that one volume."""
    chain = [layer["volume_id"] for layer in fleet.store.disk_chain(job.id, disk_id)]
    if chain != [volume.volume_id]:
        raise RuntimeError(
            f"job {job.id} read the chain {chain}, not the reference's volume {volume.volume_id}"
        )


def _best_job(runs: list[tuple[Measure, JobState]]) -> tuple[Measure, JobState]:
    best, job = max(runs, key=lambda run: run[0].mib_s)
    best.rounds = [m.mib_s for m, _ in runs]
    return best, job


def _best(measures: list[Measure]) -> Measure:
    best = max(measures, key=lambda m: m.mib_s)
    best.rounds = [m.mib_s for m in measures]
    return best


def _ratio(mine: Measure, ref: Measure) -> float | None:
    return round(mine.mib_s / ref.mib_s, 3) if ref.mib_s else None


def comparison(name: str, mine: Measure, ref: Measure, job: JobState) -> dict[str, Any]:
    return {
        "benchmark": name,
        "ours": mine.to_dict(),
        "reference": {"name": REFERENCE, **ref.to_dict()},
        "ratio": _ratio(mine, ref),
        "job_seconds": round(job.finished_at - job.created_at, 3),
    }


def report(measured: SshRounds, disk_size: int, rounds: int) -> dict[str, Any]:
    plain = comparison("ssh", measured.plain, measured.reference, measured.plain_job)
    netcat = comparison("ssh+netcat", measured.netcat, measured.reference, measured.netcat_job)
    ratio = netcat["ratio"]
    same = measured.same_cipher
    return {
        "benchmark": "ssh",
        "without_netcat": plain,
        "with_netcat": netcat,
        "requirement": {
            "with_netcat_ratio_at_least": REQUIRED_NETCAT_RATIO,
            "met": ratio is not None and ratio >= REQUIRED_NETCAT_RATIO,
        },
        # OpenSSH with the cipher our session negotiates, for comparison (not the requirement)
        "reference_same_cipher": {
            "name": SAME_CIPHER,
            **same.to_dict(),
            "ratio_without_netcat": _ratio(measured.plain, same),
            "ratio_with_netcat": _ratio(measured.netcat, same),
        },
        "volume": measured.volume.describe(),
        "reference_cipher": measured.cipher,
        # in the reference's seconds, not in ours (our window starts once the volume is mapped)
        "reference_connect_seconds": round(measured.connect_seconds, 3),
        "connections": get_settings().ssh.connections,
        "disk_size": disk_size,
        "rounds": rounds,
    }
