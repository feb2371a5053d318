"""``sona adapt``: a training set split in time, the checkpoint adapted on one side, before and
after scored on the other, and a servable checkpoint written; bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model import load_checkpoint
from tests.adapt_support import made_up_tracks, refused, sona
from tests.service_support import make_checkpoint


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapt")
    tracks = made_up_tracks(root / "set", people=3, appearances=2, crops=4)
    return make_checkpoint(root / "start.pt"), tracks


def test_adapt_scores_before_and_after_and_writes_a_servable_model(site, tmp_path: Path) -> None:
    checkpoint, tracks = site
    out = tmp_path / "run"
    result = sona(
        "adapt", str(tracks), "--init", str(checkpoint), "--output", str(out),
        "--split-at", "30", "--gap", "3", "--epochs", "2", "--recluster-every", "1",
        "--batch", "2x2", "--seeds", "0", "--no-onnx", "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "adapting" in text and "on 3 tracks (clusters)" in text
    assert "round 2/2" in text
    rows = [line.split("  ")[0] for line in text.splitlines()]
    assert {"raw pixels", "before: start.pt", "after: adapted"} <= set(rows)
    assert "3 tracks after 30.0 s scored" in text
    _, meta = load_checkpoint(out / "adapted.pt")
    assert meta["adapted_from"] == str(checkpoint) and meta["adapted_tracks"] == 3
    rounds = json.loads((out / "adapt" / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(1 <= r["identities"] <= 3 for r in rounds)


def test_adapt_refuses_what_it_cannot_use(site, tmp_path: Path) -> None:
    checkpoint, tracks = site
    common = ["--init", str(checkpoint), "--output", str(tmp_path / "o"), "--device", "cpu"]
    refused(sona("adapt", *common), "give VIDEO")
    refused(sona("adapt", str(tracks), *common, "--score", "all"), "nothing to adapt on")
    refused(sona("adapt", str(tracks), *common, "--split-at", "5"), "at least 2")
    refused(sona("adapt", str(tracks), *common, "--split-at", "100000"), "0 track(s) end after")
    empty = tmp_path / "nothing.csv"
    empty.write_text("camera\n")
    refused(sona("adapt", "--sites", str(empty), *common), "camera,path")
    bad = tmp_path / "bad.pt"
    bad.write_text("no")
    refused(
        sona("adapt", str(tracks), "--init", str(bad), "--output", str(tmp_path / "p")), "bad.pt"
    )
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    refused(sona("adapt", str(nothing), *common), "empty folder")
    (nothing / "tracks.json").write_text(
        json.dumps({"format": "sona-tracks", "version": 1, "cameras": {}, "tracks": {}})
    )  # a training set without tracks
    refused(sona("adapt", str(nothing), *common), "lists no tracks")
    trained = ["--init", str(checkpoint), "--dataset", "custom", "--data", str(nothing)]
    refused(sona("train", *trained, "--output", str(tmp_path / "o")), "no identity folders")
    assert not (tmp_path / "o").exists() and not (tmp_path / "p").exists()
