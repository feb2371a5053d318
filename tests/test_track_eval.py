"""``sona eval --tracks``: tracks as identities, matches only a gap away, a time split, raw
pixels and random networks as floors; folders it cannot score refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.adapt_support import made_up_tracks, refused, sona
from tests.service_support import make_checkpoint
from training.track_eval import gap_scores
from training.tracks import cannot_link, load_tracks, time_split


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return made_up_tracks(tmp_path_factory.mktemp("tracks") / "set")


def test_the_gap_keeps_near_copies_out_of_the_gallery() -> None:
    # track 0's crops at 0 and 1 s are identical; its crop at 10 s is closer to track 1's
    features = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    track = np.array([0, 0, 0, 1])
    seconds = np.array([0.0, 1.0, 10.0, 10.0])
    near = gap_scores(features, track, seconds, gap=0.5)
    far = gap_scores(features, track, seconds, gap=5.0)
    assert near.queries == 3 and far.queries == 3  # track 1's one crop has no own match
    assert near.rank1 > far.rank1  # the near-copy at 1 s no longer counts as a find
    assert far.rank1 == 0.0 and near.rank1 == pytest.approx(2 / 3)


def test_time_split_and_the_tracks_one_camera_saw_at_once(folder: Path) -> None:
    tracks = load_tracks(folder)
    earlier, later, across = time_split(tracks, 40.0)
    assert [t.name for t in earlier] == ["0001", "0002", "0003", "0004"]
    assert [t.name for t in later] == ["0005", "0006", "0007", "0008"]
    assert across == 0
    _, _, across = time_split(tracks, 44.0)
    assert across == 1
    assert cannot_link(list(tracks.tracks)) == set()  # one after the other
    overlapping = [tracks.tracks[0], tracks.tracks[1]]
    object.__setattr__(overlapping[1], "start", 5.0)
    assert cannot_link(overlapping) == {(0, 1)}


def test_eval_tracks_prints_the_floors_and_each_checkpoint(folder: Path, tmp_path: Path) -> None:
    checkpoints = [str(make_checkpoint(tmp_path / f"m{i}.pt", seed=i)) for i in range(2)]
    result = sona(
        "eval", "--tracks", str(folder), *checkpoints, "--gap", "3", "--split-at", "40",
        "--seeds", "2", "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    names = [line.split("  ")[0] for line in lines]
    assert names[1:3] == ["raw pixels", "random network"]
    assert any("mean (2 checkpoints)" in line for line in lines)
    assert "4 tracks after 40.0 s scored" in result.stdout
    # a person's crops all share one texture: raw pixels find them again, well above chance
    pixels = float(lines[1].split()[3])
    chance = float(next(line for line in lines if line.startswith("chance")).split()[1])
    assert pixels > 2 * chance


def test_folders_that_cannot_be_scored_are_refused(folder: Path, tmp_path: Path) -> None:
    refused(sona("eval", "--tracks", str(tmp_path)), "no tracks.json")
    refused(sona("eval", "--tracks", str(folder), "--split-at", "15"), "at least 2")
    few = made_up_tracks(tmp_path / "few", people=1, appearances=1)
    refused(sona("eval", "--tracks", str(few), "--score", "all"), "at least 2")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "tracks.json").write_text(
        json.dumps({"format": "sona-tracks", "version": 1, "cameras": {}, "tracks": {}})
    )
    refused(sona("eval", "--tracks", str(empty)), "lists no tracks")
    refused(
        sona("eval", "--tracks", str(folder), "--gap", "100", "--seeds", "0"), "nothing to score"
    )
