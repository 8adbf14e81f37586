"""`drover repo check` and `drover repo export` on a real local repository."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

from orchestrator.repo_commands import repo_group
from shared.repository.manifest import DiskManifest, Manifest, utc_now
from shared.repository.repository import Repository

CHUNK = 64 * 1024


def make_backup(root: Path) -> tuple[Repository, bytes]:
    repo = Repository.open(str(root), chunk_size=CHUNK)
    image = bytearray(3 * CHUNK)
    image[CHUNK : 2 * CHUNK] = os.urandom(CHUNK)
    digest = repo.put_chunk(bytes(image[CHUNK : 2 * CHUNK]))
    disk = DiskManifest("disk-1", "data", len(image), "raw", CHUNK, {1: digest})
    repo.commit_manifest(
        Manifest(
            "b1", "vm-1", "db01", "full", None, "image_transfer", utc_now(), "<ovf/>", None, [disk]
        )
    )
    return repo, bytes(image)


def test_check_reports_ok_and_a_missing_chunk(tmp_path: Path) -> None:
    repo, _ = make_backup(tmp_path / "repo")
    ok = CliRunner().invoke(repo_group, ["check", "--repository", str(tmp_path / "repo"), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.output)["ok"] is True
    for name in list(repo.backend.list("chunks/")):
        repo.backend.remove(name)
    bad = CliRunner().invoke(repo_group, ["check", "--repository", str(tmp_path / "repo")])
    assert bad.exit_code == 1 and "problem:" in bad.output


def test_export_by_index_or_name_gives_the_full_image(tmp_path: Path) -> None:
    _, image = make_backup(tmp_path / "repo")
    for disk in ("0", "data"):
        out = tmp_path / f"{disk}.raw"
        result = CliRunner().invoke(
            repo_group,
            [
                "export",
                "b1",
                "--disk",
                disk,
                "-o",
                str(out),
                "--repository",
                str(tmp_path / "repo"),
            ],
        )
        assert result.exit_code == 0, result.output
        assert out.read_bytes() == image


def test_export_of_an_unknown_disk_names_the_known_ones(tmp_path: Path) -> None:
    make_backup(tmp_path / "repo")
    result = CliRunner().invoke(
        repo_group,
        [
            "export",
            "b1",
            "--disk",
            "7",
            "-o",
            str(tmp_path / "x"),
            "--repository",
            str(tmp_path / "repo"),
        ],
    )
    assert result.exit_code != 0
    assert "has no disk '7'" in str(result.exception) and "0: data" in str(result.exception)
