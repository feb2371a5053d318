"""Disk full during ingest, for real: the data directory on a tiny tmpfs (needs root to mount)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.service_support import Server, jpeg, make_checkpoint


@pytest.fixture
def tiny_disk(tmp_path: Path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_answers_507_and_keeps_what_was_acknowledged(
    tiny_disk: Path, tmp_path: Path
) -> None:
    server = Server(make_checkpoint(tmp_path / "tiny.pt"), tiny_disk / "data", tmp_path).start()
    acknowledged, refused = [], None
    try:
        with server.client() as c:
            for round_ in range(300):
                images = [jpeg(round_ * 8 + i, size=(256, 128)) for i in range(8)]
                response = c.post(
                    "/gallery",
                    files=[("images", ("x.jpg", d, "image/jpeg")) for d in images],
                    data={"camera_id": "c", "timestamp": "2024-01-01T00:00:00Z"},
                )
                if response.status_code != 201:
                    refused = response
                    break
                acknowledged.extend(response.json()["items"])
            assert refused is not None, "the 4 MiB disk never filled"
            assert refused.status_code == 507, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert "disk is full" in refused.json()["detail"]
            assert len(acknowledged) > 8
            # nothing half-written: exactly the acknowledged items, each whole and searchable
            assert c.get("/gallery").json()["total"] == len(acknowledged)
            for item in acknowledged[:: max(1, len(acknowledged) // 10)]:
                assert c.get(f"/gallery/{item['item_id']}").json() == item
                assert c.get(f"/gallery/{item['item_id']}/image").status_code == 200
            last = acknowledged[-1]["item_id"]
            found = c.get("/search", params={"item_id": last, "k": len(acknowledged)})
            assert found.status_code == 200
            assert len(found.json()["results"]) == len(acknowledged) - 1
            assert c.get("/readyz").status_code == 200  # still serving reads
    finally:
        server.kill()
    # and after a restart on the same full disk, the same items are there
    server = Server(make_checkpoint(tmp_path / "tiny2.pt"), tiny_disk / "data", tmp_path).start()
    try:
        with server.client() as c:
            assert c.get("/gallery").json()["total"] == len(acknowledged)
    finally:
        server.kill()
