"""Erasure on request and retention against a real ``sona serve`` on the embedded store:
no file of an erased track left in the data folder, durable before the answer (kill -9 right
after it), a camera's time range, and a retention sweep killed part way and resumed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from model import PRESETS
from service.store import FaissSqliteStore, NewItem
from tests.milvus_support import milvus_env
from tests.service_support import Server, jpeg, make_checkpoint

DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("erasure") / "tiny.pt")


def gone_within(seconds: float, gone: Callable[[], bool]) -> None:
    """Wait for a sweep by the clock, not by a count of requests (a busy machine is slow)."""
    deadline = time.monotonic() + seconds
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.1)


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def holds_bytes(folder: Path, data: bytes) -> list[Path]:
    return [p for p in files_under(folder) if data in p.read_bytes()]


def post(c, gallery: str, crops: list[bytes], **form: str) -> list[str]:
    r = c.post(
        "/gallery",
        params={"gallery": gallery},
        data=form,
        files=[("images", (f"{n}.jpg", b, "image/jpeg")) for n, b in enumerate(crops)],
    )
    assert r.status_code == 201, r.text
    return [i["item_id"] for i in r.json()["items"]]


def test_erasing_a_track_leaves_no_file_of_it(checkpoint: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(checkpoint, data).start()
    person = [jpeg(100 + n) for n in range(3)]
    other = [jpeg(200 + n) for n in range(2)]
    with server.client() as c:
        form = {"camera_id": "c1", "timestamp": "2024-05-01T12:00:00Z"}
        erased = post(c, "lobby", person, track_id="t-person", **form)
        kept = post(c, "lobby", other, track_id="t-other", **form)
        assert all(holds_bytes(data, b) for b in person)
        r = c.delete("/gallery/tracks/t-person", params={"gallery": "lobby"})
        assert r.status_code == 200, r.text
        assert r.json() == {"removed": 3, "gallery": "lobby", "track_id": "t-person"}
    server.kill()  # the answer came: it holds without a clean stop
    assert not [p for p in files_under(data) if any(i in p.name for i in erased)]
    assert not [b for b in person if holds_bytes(data / "crops", b)]
    server = Server(checkpoint, data).start()
    try:
        with server.client() as c:
            assert c.get("/gallery/tracks/t-person", params={"gallery": "lobby"}).status_code == 404
            assert all(c.get(f"/gallery/{i}").status_code == 404 for i in erased)
            assert all(c.get(f"/gallery/{i}/image").status_code == 200 for i in kept)
            again = c.delete("/gallery/tracks/t-person", params={"gallery": "lobby"})
            assert again.status_code == 404
    finally:
        server.stop()
    trail = [json.loads(line) for line in (data / "audit.log").read_text().splitlines()]
    erasure = [r for r in trail if r["method"] == "DELETE"]
    assert erasure[0]["removed"] == 3 and erasure[0]["track_id"] == "t-person"


def test_erasing_a_cameras_time_range(checkpoint: Path, tmp_path: Path) -> None:
    server = Server(checkpoint, tmp_path / "data").start()
    try:
        with server.client() as c:
            ids = {}
            for camera in ("c1", "c2"):
                for hour in (8, 10, 12):
                    ids[camera, hour] = post(
                        c,
                        "site",
                        [jpeg(hour * 10 + len(camera))],
                        camera_id=camera,
                        timestamp=f"2024-05-01T{hour:02d}:00:00Z",
                    )[0]
            bad = [
                {"gallery": "site"},  # nothing to choose by: never a whole gallery
                {
                    "gallery": "site",
                    "since": "2024-05-01T12:00:00Z",
                    "before": "2024-05-01T08:00:00Z",
                },
                {"gallery": "site", "before": "yesterday"},
                {"camera_id": "c1"},  # no gallery: a destructive call names it
            ]
            for params in bad:
                r = c.delete("/gallery", params=params)
                assert r.status_code == 422, (params, r.text)
            assert c.get("/gallery").json()["total"] == 6
            r = c.delete(
                "/gallery",
                params={
                    "gallery": "site",
                    "camera_id": "c1",
                    "since": "2024-05-01T10:00:00Z",
                    "before": "2024-05-01T12:00:00Z",
                },
            )
            assert r.status_code == 200 and r.json()["removed"] == 1, r.text
            r = c.delete("/gallery", params={"gallery": "site", "before": "2024-05-01T09:00:00Z"})
            assert r.json()["removed"] == 2
            left = {k for k, i in ids.items() if c.get(f"/gallery/{i}").status_code == 200}
            assert left == {("c1", 12), ("c2", 10), ("c2", 12)}
    finally:
        server.stop()


def fill(data: Path, n_old: int, n_new: int, now: datetime) -> None:
    """Items written straight into the store (no model needed): old ones past retention."""
    store = FaissSqliteStore(data, dim=PRESETS["tiny"].embedding_dim, index="Flat")
    rng = np.random.default_rng(0)
    crop = jpeg(1)
    try:
        for start in range(0, n_old + n_new, 500):
            batch = []
            for n in range(start, min(start + 500, n_old + n_new)):
                v = rng.standard_normal(store.dim).astype(np.float32)
                when = now - (400 * DAY if n < n_old else DAY)
                batch.append(NewItem(v / np.linalg.norm(v), "c1", when, crop, "image/jpeg"))
            store.add("lobby" if start % 1000 == 0 else "entrance", batch)
    finally:
        store.close()


def crop_count(data: Path) -> int:
    return len(files_under(data / "crops"))


def test_a_retention_sweep_killed_part_way_resumes(checkpoint: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    now = datetime.now(UTC)
    fill(data, n_old=1500, n_new=500, now=now)
    assert crop_count(data) == 2000
    slow = {"SONA_RETENTION_DAYS": "365", "SONA_RETENTION_BATCH": "1"}
    server = Server(checkpoint, data, **slow).start()
    with server.client() as c:
        deadline = time.monotonic() + 60
        while (total := c.get("/gallery").json()["total"]) == 2000:
            if time.monotonic() > deadline:
                break
    server.kill()  # one item a batch: 1,500 durable steps, and this is one of the first
    assert total > 500
    server = Server(checkpoint, data).start()  # no retention: what the kill left
    with server.client() as c:
        left = c.get("/gallery").json()["total"]
        assert 500 < left < 2000  # killed part way
    server.stop()
    assert crop_count(data) == left  # no orphan crop, no item without its crop

    server = Server(checkpoint, data, SONA_RETENTION_DAYS="365").start()
    try:
        with server.client() as c:
            deadline = time.monotonic() + 120  # the start-up sweep runs in the background
            while time.monotonic() < deadline:
                metrics = c.get("/metrics").text
                if 'sona_retention_sweeps_total{outcome="done"} 1.0' in metrics:
                    break
                time.sleep(0.05)
            assert c.get("/gallery").json()["total"] == 500
            removed = sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("sona_retention_removed_items_total{")
            )
            assert removed == left - 500
    finally:
        server.stop()
    assert crop_count(data) == 500
    sweeps = [
        json.loads(line)
        for line in (data / "audit.log").read_text().splitlines()
        if '"retention-sweep"' in line
    ]
    assert sweeps[-1]["outcome"] == "done" and sum(sweeps[-1]["removed"].values()) == left - 500


def test_per_gallery_retention_and_the_periodic_sweep(checkpoint: Path, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    server = Server(
        checkpoint,
        tmp_path / "data",
        SONA_RETENTION_DAYS_BY_GALLERY="short=2, long=30",
        SONA_RETENTION_SWEEP_S="0.5",
    ).start()
    try:
        with server.client() as c:
            ten_days = (now - 10 * DAY).isoformat()
            short = post(c, "short", [jpeg(1)], camera_id="c", timestamp=ten_days)
            long = post(c, "long", [jpeg(2)], camera_id="c", timestamp=ten_days)
            forever = post(c, "other", [jpeg(3)], camera_id="c", timestamp=ten_days)
            fresh = post(c, "short", [jpeg(4)], camera_id="c", timestamp=now.isoformat())
            gone_within(30, lambda: c.get(f"/gallery/{short[0]}").status_code == 404)
            assert c.get(f"/gallery/{short[0]}").status_code == 404
            for kept in (long, forever, fresh):
                assert c.get(f"/gallery/{kept[0]}").status_code == 200
    finally:
        server.stop()


def test_a_bad_retention_setting_is_one_line(tmp_path: Path) -> None:
    from tests.service_support import serve_fails

    text = serve_fails(SONA_RETENTION_DAYS_BY_GALLERY="lobby=soon", SONA_DATA_DIR=str(tmp_path))
    assert "lobby=soon" in text


def test_erasure_and_retention_on_a_milvus_server(
    checkpoint: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The same calls on the Milvus store (a real server, crops in a shared folder)."""
    uri = request.getfixturevalue("milvus_server_uri")
    crops = tmp_path / "shared-crops"
    server = Server(
        checkpoint,
        tmp_path / "data",
        **milvus_env(uri, crops),
        SONA_RETENTION_DAYS="365",
        SONA_RETENTION_SWEEP_S="0.5",
    ).start(timeout=180)
    try:
        with server.client() as c:
            recent = (datetime.now(UTC) - DAY).isoformat()
            person = post(
                c,
                "lobby",
                [jpeg(n) for n in range(3)],
                track_id="t-9",
                camera_id="a",
                timestamp=recent,
            )
            door = post(
                c, "lobby", [jpeg(10 + n) for n in range(2)], camera_id="door", timestamp=recent
            )
            old = post(c, "lobby", [jpeg(20)], camera_id="a", timestamp="2020-01-01T00:00:00Z")
            r = c.delete("/gallery/tracks/t-9", params={"gallery": "lobby"})
            assert r.status_code == 200 and r.json()["removed"] == 3, r.text
            assert not [p for p in files_under(crops) if any(i in p.name for i in person)]
            r = c.delete("/gallery", params={"gallery": "lobby", "camera_id": "door"})
            assert r.json()["removed"] == 2
            assert not [p for p in files_under(crops) if any(i in p.name for i in door)]
            gone_within(60, lambda: c.get(f"/gallery/{old[0]}").status_code == 404)
            assert c.get(f"/gallery/{old[0]}").status_code == 404  # retention
            assert not files_under(crops)
    finally:
        server.stop()
