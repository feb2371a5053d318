"""docs/security.md's shell commands, run as written (only the host and port of the URLs
replaced) against a real ``sona serve`` whose data folder is the folder they run in."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service_support import Server, jpeg, make_checkpoint

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "security.md"
DOC_URL = "http://127.0.0.1:8000"


def sh_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S)


def run(block: str, cwd: Path, url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("SONA_DATA_DIR", None)  # the commands use the data folder where they run
    done = subprocess.run(
        ["bash", "-e", "-c", block.replace(DOC_URL, url)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (block, done.stderr)
    return done


def test_the_security_page_commands_run_as_written(tmp_path: Path) -> None:
    blocks = sh_blocks()
    assert len(blocks) == 5
    keys, revoke, audit, erase, certificate = blocks
    server = Server(make_checkpoint(tmp_path / "tiny.pt"), tmp_path / "data").start()
    try:
        with server.client() as c:  # no key yet: the service is open
            for camera, track, hour in (("hall", "t-17", 7), ("door", None, 8), ("door", None, 9)):
                form = {"camera_id": camera, "timestamp": f"2024-05-01T{hour:02d}:30:00Z"}
                if track:
                    form["track_id"] = track
                images = [
                    ("images", (f"{n}.jpg", jpeg(hour * 10 + n), "image/jpeg")) for n in range(3)
                ]
                added = c.post("/gallery", params={"gallery": "lobby"}, data=form, files=images)
                assert added.status_code == 201
                item = added.json()["items"][0]["item_id"]

        listed = run(keys, tmp_path, server.url).stdout
        assert "ops" in listed and "lobby-guard" in listed and "admin" in listed
        ops = (tmp_path / "ops.key").read_text().strip()
        guard = (tmp_path / "lobby-guard.key").read_text().strip()
        with server.client() as c:  # the key file now exists: keys are required, no restart
            assert c.get("/gallery").status_code == 401
            assert (
                c.get("/gallery", headers={"Authorization": f"Bearer {guard}"}).status_code == 200
            )
            assert (
                c.get("/metrics", headers={"Authorization": f"Bearer {guard}"}).status_code == 403
            )
            assert c.get(f"/gallery/{item}", headers={"Authorization": f"Bearer {ops}"}).is_success

        run(revoke, tmp_path, server.url)
        with server.client() as c:
            assert (
                c.get("/gallery", headers={"Authorization": f"Bearer {guard}"}).status_code == 401
            )

        records = run(audit, tmp_path, server.url).stdout.splitlines()
        assert records and all('"key":"ops"' in r for r in records)

        answers = run(erase, tmp_path, server.url).stdout
        assert '"removed":3' in answers and '"track_id":"t-17"' in answers
        assert answers.count('"removed":3') == 2  # the track; the door's three at 08:30
        with server.client(headers={"Authorization": f"Bearer {ops}"}) as c:
            assert c.get("/gallery").json()["total"] == 3
    finally:
        server.stop()

    if not subprocess.run(["which", "openssl"], capture_output=True).returncode:
        run(certificate, tmp_path, DOC_URL)
        ssl.create_default_context().load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    else:
        pytest.skip("openssl is not installed")
