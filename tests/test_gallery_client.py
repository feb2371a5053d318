"""`sona gallery add`: camera and time from Market-style names or a CSV."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from client import crops_from_csv, crops_from_folder


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")


def test_market_names_give_camera_time_and_identity(tmp_path: Path) -> None:
    touch(tmp_path, "0002_c3s1_000451_01.jpg", "-1_c1s1_000001_00.jpg", "0000_c2s1_000050_02.jpg")
    start = datetime(2024, 5, 1, 8, tzinfo=UTC)
    crops = crops_from_folder(tmp_path, start=start, fps=25, with_identity=True)
    assert [(c.camera_id, c.identity) for c in crops] == [("c2", None), ("c3", "0002")]
    assert crops[1].timestamp == "2024-05-01T08:00:18.040000+00:00"
    assert crops_from_folder(tmp_path, start=start)[1].identity is None  # unlabelled by default


def test_unnamed_files_need_a_csv(tmp_path: Path) -> None:
    touch(tmp_path, "0002_c3s1_000451_01.jpg", "holiday.jpg")
    with pytest.raises(ValueError, match=r"holiday.jpg.*--csv"):
        crops_from_folder(tmp_path, start=datetime(2024, 1, 1, tzinfo=UTC))


def test_csv(tmp_path: Path) -> None:
    touch(tmp_path / "crops", "a.jpg", "b.png")
    table = tmp_path / "crops.csv"
    table.write_text(
        "path,camera_id,timestamp,identity,track_id\n"
        "crops/a.jpg,gate,2024-05-01T08:00:00Z,alice,\n"
        "crops/b.png,lobby,2024-05-01T09:00:00+02:00,,t7\n"
    )
    a, b = crops_from_csv(table)
    assert a.metadata() == {
        "camera_id": "gate",
        "timestamp": "2024-05-01T08:00:00Z",
        "identity": "alice",
    }
    assert b.metadata()["track_id"] == "t7" and "identity" not in b.metadata()
    table.write_text("path,camera_id,timestamp\ncrops/missing.jpg,gate,2024-05-01T08:00:00Z\n")
    with pytest.raises(ValueError, match=r"crops.csv:2: no file"):
        crops_from_csv(table)
    table.write_text("file,camera\n")
    with pytest.raises(ValueError, match="lacks"):
        crops_from_csv(table)


def test_gallery_add_with_no_service_listening_is_one_line(tmp_path: Path, capsys) -> None:
    import socket

    from cli.main import main

    folder = tmp_path / "crops"
    folder.mkdir()
    (folder / "0002_c3s1_000451_01.jpg").write_bytes(b"x")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    assert main(["gallery", "add", str(folder), "--url", url]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"cannot reach the service at {url}" in err
