"""The footage pipeline's parts on real pixels: decoding real video files (written here, and
vtest.avi where installed), det.txt validation, HOG, a torchvision detector, the tracker and
crop choice."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from footage import FootageError
from footage.choose import CropChooser
from footage.decode import ImageSequence, VideoFile, open_sources
from footage.detect import Detection, Detector, HogDetector, TorchvisionDetector, nms
from footage.finder import Finder
from footage.motchallenge import FileDetector, read_det
from footage.track import Tracker, iou_matrix
from tests.footage_support import (
    FPS,
    HEIGHT,
    VTEST,
    WIDTH,
    needs_vtest,
    people_boxes,
    scene,
    write_det,
    write_video,
)

# ------------------------------------------------------------------------------ decoding


def test_video_frames_carry_stream_times(tmp_path: Path) -> None:
    source = VideoFile(write_video(tmp_path / "v.avi", frames=12))
    assert (source.frames, source.fps, source.width, source.height) == (12, FPS, WIDTH, HEIGHT)
    frames = list(source)
    assert [f.index for f in frames] == list(range(12))
    np.testing.assert_allclose([f.seconds for f in frames], np.arange(12) / FPS, atol=1e-6)
    # MJPEG is lossy: each frame is nearer its own scene than another frame's
    errors = [np.abs(frames[5].image.astype(int) - scene(i)).mean() for i in (5, 4, 9)]
    assert errors[0] < 0.8 * min(errors[1:])
    assert len(list(VideoFile(tmp_path / "v.avi", max_seconds=0.5))) == 5
    slowed = list(VideoFile(tmp_path / "v.avi", fps=4))  # --fps: the rate the user says
    np.testing.assert_allclose([f.seconds for f in slowed], np.arange(12) / 4, atol=1e-9)


def test_truncated_unreadable_and_missing_videos_are_refused(tmp_path: Path) -> None:
    data = write_video(tmp_path / "v.avi", frames=30).read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    with pytest.raises(FootageError, match=r"ends after \d+ of the 30 frames"):
        VideoFile(tmp_path / "cut.avi")
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(FootageError, match=r"junk\.mp4"):
        VideoFile(tmp_path / "junk.mp4")
    with pytest.raises(FootageError, match="no such file"):
        open_sources(tmp_path / "absent.mp4")


def test_a_folder_of_videos_and_an_image_sequence(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "b.avi", frames=4)
    write_video(clips / "a.avi", frames=6)
    assert [s.name for s in open_sources(clips)] == ["a.avi", "b.avi"]
    seq = tmp_path / "seq"
    seq.mkdir()
    for i in range(5):
        cv2.imwrite(str(seq / f"{i:06d}.png"), scene(i))
    with pytest.raises(FootageError, match="--fps"):
        open_sources(seq)
    (source,) = open_sources(seq, fps=4)
    assert isinstance(source, ImageSequence) and source.frames == 5
    frames = list(source)
    assert [f.seconds for f in frames] == [0, 0.25, 0.5, 0.75, 1.0]
    np.testing.assert_array_equal(frames[2].image, scene(2))  # PNG: exact
    (seq / "000009.png").write_bytes(b"not a png")
    with pytest.raises(FootageError, match=r"000009\.png"):
        ImageSequence(seq, 4)


@needs_vtest
def test_vtest_decodes_whole() -> None:
    source = VideoFile(VTEST)
    assert (source.frames, source.fps, source.width, source.height) == (795, 10.0, 768, 576)


# ------------------------------------------------------------------------------ det.txt


def test_det_txt_is_read_by_frame(tmp_path: Path) -> None:
    detector = FileDetector(write_det(tmp_path / "det.txt", frames=10))
    assert sorted(detector.by_frame) == list(range(10))
    (a, _) = detector.detect(3, np.zeros((1, 1, 3), np.uint8))
    assert (a.x, a.y, a.w, a.h) == people_boxes(3)[0] and a.score == pytest.approx(0.9)
    detector.check(10, WIDTH, HEIGHT, "v.avi")
    assert detector.detect(20, np.zeros((1, 1, 3), np.uint8)) == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1,-1,10,10,20", "5 fields"),
        ("1,-1,10,ten,20,40,0.9", "not a number"),
        ("0,-1,10,10,20,40,0.9", "frame 0 is not"),
        ("1.5,-1,10,10,20,40,0.9", "not a whole number"),
        ("1,-1,10,10,-20,40,0.9", "width -20"),
        ("1,-1,10,10,20,nan,0.9", "finite"),
    ],
)
def test_bad_det_txt_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "det.txt"
    path.write_text(f"1,-1,10,10,20,40,0.9\n{line}\n")
    with pytest.raises(FootageError, match=message) as info:
        read_det(path)
    assert f"{path}:2" in str(info.value) and "\n" not in str(info.value)


def test_det_txt_of_another_video_is_refused(tmp_path: Path) -> None:
    longer = FileDetector(write_det(tmp_path / "det.txt", frames=10, shift=40))
    with pytest.raises(FootageError, match=r"names frame 50 but v\.avi has 30 frames"):
        longer.check(30, WIDTH, HEIGHT, "v.avi")
    path = tmp_path / "far.txt"
    path.write_text("1,-1,700,500,40,100,1\n")
    with pytest.raises(FootageError, match="outside the 320x240 picture"):
        FileDetector(path).check(30, WIDTH, HEIGHT, "v.avi")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(FootageError, match="no detections"):
        FileDetector(tmp_path / "empty.txt")


# ------------------------------------------------------------------------------ detectors


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = [
        Detection(10, 10, 40, 100, 1.0),
        Detection(12, 12, 40, 100, 2.0),
        Detection(200, 10, 40, 100, -0.5),  # a negative score survives when alone
    ]
    kept = nms(boxes, 0.4)
    assert sorted(d.score for d in kept) == [-0.5, 2.0]


@needs_vtest
def test_hog_finds_the_people_of_a_real_frame() -> None:
    frame = next(iter(VideoFile(VTEST, max_seconds=0.1))).image
    found = HogDetector().detect(0, frame)
    assert len(found) >= 3  # the first frame shows several walkers
    boxes = np.array([d.corners for d in found])
    assert (boxes[:, :2] >= -20).all() and (boxes[:, 2] <= 788).all() and (boxes[:, 3] <= 596).all()
    heights = boxes[:, 3] - boxes[:, 1]
    assert ((heights > 60) & (heights < 400)).all()
    overlap = iou_matrix(boxes, boxes) - np.eye(len(boxes))
    assert overlap.max() <= 0.4 + 1e-6  # NMS left no two boxes overlapping more


def test_hog_finds_nobody_in_an_empty_scene() -> None:
    assert HogDetector().detect(0, scene(0, blank=True)) == []


def test_torchvision_detector_wiring_with_randomly_initialised_weights(tmp_path: Path) -> None:
    """Not a trained detector (nothing is downloaded here): a randomly initialised Faster R-CNN
    saved as a state dict, to check loading, pre-processing and the output's shape and units.
    Its class head is biased towards COCO's person class, so that its proposals come out as
    people rather than as whichever of 91 classes the random weights favour."""
    import torch
    import torchvision

    torch.manual_seed(0)
    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    net = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=91)
    with torch.no_grad():
        net.roi_heads.box_predictor.cls_score.bias[1] = 10.0
    torch.save(net.state_dict(), tmp_path / "random-init.pth")
    detector = TorchvisionDetector(
        tmp_path / "random-init.pth", name, min_score=0.0, high_score=0.5, device="cpu"
    )
    found = detector.detect(0, scene(0))
    assert found, "with no score threshold an untrained head still proposes person boxes"
    for d in found:
        assert 0 <= d.x <= d.x + d.w <= WIDTH + 1e-3 and 0 <= d.y <= d.y + d.h <= HEIGHT + 1e-3
        assert 0.0 <= d.score <= 1.0
    with pytest.raises(FootageError, match="not fasterrcnn_resnet50_fpn COCO weights"):
        TorchvisionDetector(tmp_path / "random-init.pth", "fasterrcnn_resnet50_fpn")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(FootageError, match="not a PyTorch weights file"):
        TorchvisionDetector(tmp_path / "junk.pth", name)


def test_onnx_runtime_and_batches_match_pytorch_with_randomly_initialised_weights(
    tmp_path: Path,
) -> None:
    """The same randomly initialised Faster R-CNN (class head nudged towards 'person') run in
    PyTorch one frame at a time, in PyTorch in one batch, and exported to ONNX Runtime finds
    the same boxes, on frames of two sizes (the exported graph leaves the size free)."""
    import torch
    import torchvision

    torch.manual_seed(1)
    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    net = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=91)
    with torch.no_grad():
        net.roi_heads.box_predictor.cls_score.bias[1] = 3.0
    torch.save(net.state_dict(), tmp_path / "random-init.pth")
    frames = [(0, scene(0)), (1, cv2.resize(scene(5), (480, 360)))]
    common = {"min_score": 0.0, "device": "cpu"}
    eager = TorchvisionDetector(tmp_path / "random-init.pth", name, runtime="torch", **common)
    onnx = TorchvisionDetector(tmp_path / "random-init.pth", name, runtime="onnx", **common)
    batched = TorchvisionDetector(
        tmp_path / "random-init.pth", name, runtime="torch", batch=2, **common
    )
    assert eager.batch == 1 and batched.batch == 2 and onnx.runtime == "onnx"
    one_by_one = [eager.detect(i, image) for i, image in frames]
    assert all(one_by_one)
    for other in (onnx.detect_many(frames), batched.detect_many(frames)):
        for mine, theirs in zip(one_by_one, other, strict=True):
            # the best half, most of it the same: near-equal scores of untrained weights let
            # the two runtimes' non-maximum suppression keep a few different boxes
            best = sorted(mine, key=lambda d: -d.score)[: len(mine) // 2]
            a = np.array([d.corners for d in best])
            b = np.array([d.corners for d in theirs]).reshape(-1, 4)
            matched = (iou_matrix(a, b).max(axis=1, initial=0.0) > 0.9).mean()
            assert matched >= 0.8, matched
    with pytest.raises(FootageError, match="does not run in ONNX Runtime"):
        TorchvisionDetector(
            tmp_path / "random-init.pth", "ssdlite320_mobilenet_v3_large", runtime="onnx"
        )


class BatchedTruth(Detector):
    """The made-up scene's true boxes, taken a batch at a time (as a CNN on a GPU would)."""

    name = "batched truth"
    batch = 3

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def detect(self, index: int, image) -> list[Detection]:
        return [Detection(x, y, w, h, 1.0) for x, y, w, h in people_boxes(index)]

    def detect_many(self, frames):
        self.calls.append([index for index, _ in frames])
        return super().detect_many(frames)


def test_a_batching_detector_gets_the_frames_that_moved_in_one_call() -> None:
    walk = [(i, scene(i)) for i in range(20)]
    still = [(20 + i, scene(0)) for i in range(25)]  # then nothing moves (learnt as background)
    detector = BatchedTruth()
    finder = Finder(detector, motion_gate=True)
    found = [d for n in range(0, 45, 3) for d in finder.find_many((walk + still)[n : n + 3])]
    assert detector.calls[0][0] == 0 and max(len(c) for c in detector.calls) == 3  # one call
    assert found[19] == detector.detect(19, walk[19][1]) and found[-1] == []
    assert 44 not in [i for call in detector.calls for i in call]  # a still frame: no call
    every = Finder(BatchedTruth(), motion_gate=False)
    frames = walk[:5]
    assert every.find_many(frames) == [every.detector.detect(i, im) for i, im in frames]


# ------------------------------------------------------------------------------ tracking


def _boxes(frame: int) -> list[Detection]:
    return [Detection(x, y, w, h, 1.0) for x, y, w, h in people_boxes(frame)]


def test_tracker_follows_two_people_through_missed_frames() -> None:
    tracker = Tracker(max_age=5, min_hits=3)
    seen: dict[int, set[int]] = {}
    for frame in range(30):
        dets = _boxes(frame)
        if 10 <= frame <= 12:
            dets = dets[:1]  # the second person is missed for three frames
        pairs, ended = tracker.update(frame, dets)
        assert not ended
        for track, det in pairs:
            seen.setdefault(track.key, set()).add(round(det.y))
    finished = tracker.finish()
    assert sorted(t.number for t in finished) == [1, 2]
    assert len(seen) == 2  # no new track after the gap, no swap: one height per track
    assert all(len(ys) == 1 for ys in seen.values())


def test_tracker_ends_lost_tracks_and_ignores_flickers() -> None:
    tracker = Tracker(max_age=2, min_hits=3)
    ended_all = []
    for frame in range(12):
        dets = _boxes(frame)[:1] if frame < 6 else []
        if frame == 8:
            dets = [Detection(150, 50, 30, 90, 1.0)]  # one frame of something: no track
        _, ended = tracker.update(frame, dets)
        ended_all += ended
    assert [t.number for t in ended_all] == [1] and ended_all[0].last_frame == 5
    assert tracker.finish() == [] and tracker.confirmed == 1


def test_weak_detections_only_continue_tracks() -> None:
    tracker = Tracker(min_hits=1, high_score=0.5)
    tracker.update(0, [Detection(10, 10, 40, 100, 0.9), Detection(200, 10, 40, 100, 0.2)])
    assert len(tracker.live) == 1  # the weak one starts nothing
    pairs, _ = tracker.update(1, [Detection(14, 10, 40, 100, 0.2)])
    assert len(pairs) == 1 and pairs[0][0].number == 1  # but keeps the strong one's track


# ------------------------------------------------------------------------------ crop choice


def test_crops_are_usable_sharp_and_spread_over_the_track() -> None:
    chooser = CropChooser(min_height=80)
    frame = scene(0)
    blurred = cv2.GaussianBlur(frame, (0, 0), 4)
    for i in range(100):  # 10 s at 10 fps
        seconds = i / 10
        x, y, w, h = people_boxes(0)[0]
        image = blurred if i % 2 else frame  # every other frame blurred
        if 40 <= i < 50:
            chooser.add(i, seconds, image, Detection(0, y, w, h, 1.0))  # cut by the border
        elif 50 <= i < 60:
            chooser.add(i, seconds, image, Detection(x, y, w, 60, 1.0))  # too small
        else:
            chooser.add(i, seconds, image, Detection(x, y, w, h, 1.0))
    chosen = chooser.choose(4)
    assert len(chosen) == 4
    times = [c.seconds for c in chosen]
    assert times == sorted(times) and min(np.diff(times)) >= 1.5  # spread, not one moment
    assert all(c.frame % 2 == 0 for c in chosen)  # the sharp frames
    assert all(not 4.0 <= c.seconds < 6.0 for c in chosen)  # not cut, not too small
    assert all(c.height >= 80 and c.crop.shape[0] == c.height for c in chosen)
    assert CropChooser(min_height=200).choose(4) == []


def test_tracks_that_never_move_are_told_apart_from_walkers() -> None:
    tracker = Tracker(min_hits=1)
    for frame in range(20):
        jitter = frame % 2  # a false alarm on a parked van: the box only jitters
        tracker.update(frame, [Detection(300 + jitter, 50, 40, 100, 1.0), *_boxes(frame)[:1]])
    still, walker = sorted(tracker.finish(), key=lambda t: t.moved)
    assert still.moved < 0.05 and walker.moved > 1.0  # 6 px a frame for 19 frames, 110 tall
    assert still.still(0.5, fps=10) and not walker.still(0.5, fps=10)
    assert not walker.still(0.5, fps=1)  # 19 s: the full half height needed, and moved


def test_motion_gate_finds_the_walkers_and_nothing_in_a_still_scene() -> None:
    from footage.motion import MotionGate, merge_boxes

    assert merge_boxes([(0, 0, 10, 10), (5, 5, 10, 10), (40, 40, 5, 5)]) == [
        (0, 0, 15, 15),
        (40, 40, 5, 5),
    ]
    gate = MotionGate()
    for frame in range(20):
        regions = gate.regions(scene(frame))
    for x, y, w, h in people_boxes(19):  # each walker lies inside a region that moved
        assert any(
            rx <= x and ry <= y and x + w <= rx + rw and y + h <= ry + rh
            for rx, ry, rw, rh in regions
        ), (x, y, regions)
    area = sum(w * h for _, _, w, h in regions)
    assert area < scene(0).shape[0] * scene(0).shape[1]  # not the whole frame
    still = MotionGate()
    for _ in range(20):
        regions = still.regions(scene(0))
    assert regions == []


def test_prefetch_hands_over_frames_in_order_and_the_decoders_error() -> None:
    from footage.decode import Frame, prefetch

    frames = [Frame(i, i / 10, np.zeros((2, 2, 3), np.uint8)) for i in range(50)]
    assert [f.index for f in prefetch(iter(frames), depth=3)] == list(range(50))

    def broken():
        yield frames[0]
        raise FootageError("frame 1 could not be decoded")

    with pytest.raises(FootageError, match="frame 1"):
        list(prefetch(broken()))
    early = prefetch(iter(frames), depth=2)  # a reader that stops early stops the thread
    assert next(early).index == 0
    early.close()


def test_site_csv_rows_and_camera_arguments(tmp_path: Path) -> None:
    from footage.site import parse_cameras, read_sites

    sites = tmp_path / "c.csv"
    sites.write_text("camera_id,source,start\nA,a.mp4,2024-05-01T08:00:00Z\nB,rtsp://h/s,\n")
    cams = read_sites(sites)
    assert [(c.camera_id, c.source, c.start) for c in cams] == [
        ("A", "a.mp4", "2024-05-01T08:00:00Z"),
        ("B", "rtsp://h/s", None),
    ]
    assert [c.camera_id for c in parse_cameras(["x=a.mp4", "y=b.mp4"], None)] == ["x", "y"]
    sites.write_text("camera_id,source\nA,a.mp4,extra\n")
    with pytest.raises(FootageError, match="more fields than columns"):
        read_sites(sites)


def test_stream_urls_lose_their_credentials() -> None:
    from footage.live import is_stream, public_url

    assert public_url("rtsp://admin:pw@10.0.0.9:554/live?ch=1") == "rtsp://10.0.0.9:554/live?ch=1"
    assert is_stream("udp://127.0.0.1:5000") and not is_stream("clips/udp.mp4")
