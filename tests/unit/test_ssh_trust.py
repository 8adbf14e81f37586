from __future__ import annotations

import paramiko
import pytest

from shared.ssh_trust import HostKeyRefused, PinnedHostKey, fingerprint, matches

KEY = paramiko.RSAKey.generate(1024)
OTHER = paramiko.RSAKey.generate(1024)


def test_a_key_matches_its_public_key_line_and_its_fingerprint() -> None:
    line = f"{KEY.get_name()} {KEY.get_base64()} comment"
    assert matches(KEY, line) and matches(KEY, fingerprint(KEY))
    assert not matches(OTHER, line) and not matches(OTHER, fingerprint(KEY))
    assert fingerprint(KEY).startswith("SHA256:") and not fingerprint(KEY).endswith("=")


def test_the_policy_accepts_the_pinned_key_only() -> None:
    client = paramiko.SSHClient()
    PinnedHostKey(fingerprint(KEY), "root@guest:22").missing_host_key(client, "guest", KEY)
    with pytest.raises(HostKeyRefused, match="root@guest:22 has changed"):
        PinnedHostKey(fingerprint(KEY), "root@guest:22").missing_host_key(client, "guest", OTHER)
    with pytest.raises(HostKeyRefused, match="no host key is pinned for root@guest:22"):
        PinnedHostKey("", "root@guest:22").missing_host_key(client, "guest", KEY)
