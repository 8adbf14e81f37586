"""Client side of `drover lab write`: asks the running lab to write as a guest would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from lab.labfile import read_lab_json
from shared.errors import DroverError

LAB_PREFIX = "/ovirt-engine/lab"


def guest_write(state_dir: Path, vm: str, disk: int, offset: int, length: int) -> dict[str, Any]:
    lab = read_lab_json(state_dir)
    engine = lab["engine"]
    base = engine["url"].split("/ovirt-engine/")[0]
    with httpx.Client(base_url=base, verify=engine["ca_file"], timeout=120) as client:
        token = login(client, engine)
        response = client.post(
            f"{LAB_PREFIX}/vms/{vm}/disks/{disk}/write",
            json={"offset": offset, "length": length},
            headers={"Authorization": f"Bearer {token}"},
        )
    if response.status_code != 200:
        raise DroverError(f"lab write to VM {vm!r} disk {disk} failed: {_reason(response)}")
    return dict(response.json())


def login(client: httpx.Client, engine: dict[str, Any]) -> str:
    """An SSO token for the lab's control API (client based at the engine's origin)."""
    response = client.post(
        "/ovirt-engine/sso/oauth/token",
        data={
            "grant_type": "password",
            "scope": "ovirt-app-api",
            "username": engine["username"],
            "password": engine["password"],
        },
        headers={"Accept": "application/json"},
    )
    body = response.json()
    if "access_token" not in body:
        raise DroverError(f"the lab refused its own credentials: {body}")
    return str(body["access_token"])


def _reason(response: httpx.Response) -> str:
    text = response.text.strip()
    return f"HTTP {response.status_code}: {text[:500]}"
