"""Faster without losing people: the default search (HOG only where the picture moved, every
other frame, a coarser scale step) still indexes most of the people-tracks that searching
every frame whole does, on real footage (the first 10 s of vtest.avi; HOG at 1.25x on both
sides to keep the reference within seconds). The threshold sits far below what this measures
(see the footage section of bench/RESULTS.md for the whole clip at the default 1.5x)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from footage.decode import VideoFile
from footage.detect import HogDetector
from footage.ingest import Settings, ingest
from footage.recall import iou, people_only, recall, reference_tracks
from footage.state import RunState
from tests.footage_support import VTEST, needs_vtest

pytestmark = [needs_vtest, pytest.mark.slow]
SECONDS = 10
UPSCALE = 1.25


class Recorder:
    """Stands in for the HTTP uploader: keeps each indexed crop's frame and box."""

    def __init__(self) -> None:
        self.crops: list = []

    def check(self) -> None:
        pass

    def exists(self, track_id: str) -> list[str]:
        return []

    def send(self, track_id: str, crops: list[tuple[bytes, dict]]) -> list[str]:
        self.crops.extend((m["frame"], tuple(m["box"])) for _, m in crops)
        return [f"{track_id}-{n}" for n in range(len(crops))]


def test_the_default_search_indexes_most_people_the_exhaustive_one_does(tmp_path: Path) -> None:
    reference = reference_tracks(
        VideoFile(VTEST, max_seconds=SECONDS), HogDetector(upscale=UPSCALE)
    )
    people = people_only(reference)
    assert len(people) >= 5  # enough people for a fraction to mean something
    recorder = Recorder()
    defaults = Settings(camera="c", start=datetime(2024, 5, 1, tzinfo=UTC))
    assert defaults.motion_gate and defaults.detect_every > 1
    ingest(
        [VideoFile(VTEST, max_seconds=SECONDS)],
        HogDetector(upscale=UPSCALE, pyramid=1.2),  # as the command's default with the gate
        recorder,  # type: ignore[arg-type]
        defaults,
        RunState(tmp_path / "state.jsonl"),
        key="recall",
        progress=False,
    )
    found, total = recall(people, recorder.crops)
    assert found / total >= 0.5, (found, total)  # far below what it measures


def test_the_aligned_sweep_finds_the_exhaustive_searchs_tall_boxes() -> None:
    """The aligned sweep repeats the exhaustive search's tall scales: on frames of vtest.avi
    with groups and fixtures in them, its boxes are the reference's tall ones (measured in the
    footage section of bench/RESULTS.md; most of them must overlap by half here)."""
    wanted = {3, 240, 550, 675}
    exhaustive, aligned = HogDetector(), HogDetector(pyramid=1.2, sweep_levels="aligned")
    # a run resumed with the other sweep is told apart (its boxes differ)
    assert aligned.describe() != HogDetector(pyramid=1.2).describe()
    best = []
    for frame in VideoFile(VTEST, max_seconds=70).sample(1):
        if frame.index not in wanted:
            continue
        tall = [d for d in exhaustive.detect(frame.index, frame.image) if d.h >= 150]
        found = aligned.aligned_sweep(frame.image)
        best += [
            max((iou((t.x, t.y, t.w, t.h), (d.x, d.y, d.w, d.h)) for d in found), default=0.0)
            for t in tall
        ]
    assert len(best) >= 4, best  # these frames hold tall boxes, or the test means nothing
    assert sum(b >= 0.5 for b in best) >= 0.75 * len(best), best
