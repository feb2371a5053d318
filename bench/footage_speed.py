"""Footage at camera speed: frames/s and track recall of each way of finding people, against
the exhaustive reference (HOG at 1.5x on every frame, the whole frame).

    python bench/footage_speed.py [VIDEO] [--configs default,exhaustive,...] [--end-to-end]

A reference track is one the exhaustive run would index (confirmed, moving, with a usable
crop), with every box the tracker gave it. It counts as found by another run when one of
that run's indexed crops overlaps the reference's box (IoU >= 0.5) at the crop's frame, or at
the nearest frame of the reference track when its detector missed that one, within the
track's frames. The reference is slow (minutes): it is computed once and kept under
``data/bench/`` keyed by the video's size and time and the detector's settings.

Each configuration runs the real pipeline (``footage.ingest.ingest``) in this process, with
the crops recorded instead of sent; CPU seconds are this process's (user + system, all
threads). ``--end-to-end`` then runs ``sona footage add`` with its defaults against a real
``sona serve`` (a random tiny model unless ``--checkpoint``): wall time from start to the
last track indexed, CPU seconds of the command and of the service, and recall from the
provenance the service returns for the indexed crops.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from footage.recall import Box, people_only, recall
from footage.recall import reference_tracks as exhaustive_tracks

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reference_tracks(video: Path, cache: Path) -> list[dict[int, Box]]:
    """The tracks the exhaustive run indexes, with all their boxes (computed once, cached)."""
    from footage.decode import VideoFile
    from footage.detect import HogDetector

    detector = HogDetector()
    stat = video.stat()
    # what the exhaustive run's boxes depend on: the fine search's settings (no sweep)
    search = (
        f"hog x{detector.upscale:g} score>{detector.min_score:g} nms{detector.nms_iou:g} "
        f"step{detector.pyramid:g}"
    )
    tag = f"{video.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{search}:v1"
    path = cache / f"footage-reference-{hashlib.sha256(tag.encode()).hexdigest()[:12]}.json"
    if path.is_file():
        return [{int(f): tuple(b) for f, b in t.items()} for t in json.loads(path.read_text())]
    print(f"computing the exhaustive reference on {video.name} (once; minutes)", flush=True)
    out = exhaustive_tracks(VideoFile(video), detector)
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def _duration(video: Path) -> float:
    from footage.decode import VideoFile

    return VideoFile(video).duration


class Recorder:
    """Stands in for the HTTP uploader: keeps each crop's frame and box."""

    def __init__(self) -> None:
        self.crops: list[tuple[int, Box]] = []
        self.tracks = 0

    def check(self) -> None:
        pass

    def exists(self, track_id: str) -> list[str]:
        return []

    def send(self, track_id: str, crops: list[tuple[bytes, dict]]) -> list[str]:
        self.tracks += 1
        self.crops.extend((m["frame"], tuple(m["box"])) for _, m in crops)
        return [f"{track_id}-{n}" for n in range(len(crops))]


@dataclass
class Config:
    name: str
    detector: str  # hog | torchvision:NAME
    every: int
    gate: bool
    hog: dict
    min_hits: int | None = None
    sweep: int | None = None  # Settings.sweep_every (None: the default)
    runtime: str = "auto"  # torchvision detectors: auto, torch or onnx


def random_torchvision(name: str, runtime: str = "auto", batch: int | None = None):
    """A torchvision detector with randomly initialised weights: the network's speed only
    (the COCO weights are a download; it finds nobody, so the rest of the pipeline is idle and
    its recall means nothing)."""
    import torch
    import torchvision

    from footage.detect import TorchvisionDetector

    torch.manual_seed(0)
    net = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=91)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random.pth"
        torch.save(net.state_dict(), path)
        return TorchvisionDetector(path, name, device="cpu", runtime=runtime, batch=batch)


CONFIGS = {
    "exhaustive": Config("HOG 1.5x, every frame, whole frame", "hog", 1, False, {}),
    "default": Config("default: motion-gated HOG, every 2nd frame", "hog", 2, True, {}),
    "sweep": Config(
        "motion-gated HOG, every 2nd frame, whole-frame sweep on each", "hog", 2, True, {}, sweep=1
    ),
    "sweep2": Config(
        "motion-gated HOG, every 2nd frame, whole-frame sweep on every 2nd of them",
        "hog",
        2,
        True,
        {},
        sweep=2,
    ),
    "sweep-every-frame": Config(
        "motion-gated HOG, every frame, whole-frame sweep on each", "hog", 1, True, {}, sweep=1
    ),
    "sweep-hits2": Config(
        "motion-gated HOG, every 2nd frame, sweep on each, tracks confirmed after 2 hits",
        "hog",
        2,
        True,
        {},
        min_hits=2,
        sweep=1,
    ),
    "every3": Config("motion-gated HOG, every 3rd frame", "hog", 3, True, {}),
    # the exhaustive search's own tall scales (HogDetector.aligned_sweep) instead of the
    # coarse sweep: its boxes are the reference's, so what they leave is the tracking's
    "aligned": Config(
        "motion-gated HOG, every 2nd frame, the exhaustive search's tall scales on each",
        "hog",
        2,
        True,
        {"sweep_levels": "aligned"},
        sweep=1,
    ),
    "aligned2": Config(
        "motion-gated HOG, every 2nd frame, the exhaustive search's tall scales on every 2nd "
        "of them",
        "hog",
        2,
        True,
        {"sweep_levels": "aligned"},
        sweep=2,
    ),
    "aligned-hits2": Config(
        "motion-gated HOG, every 2nd frame, the exhaustive search's tall scales on each, tracks "
        "confirmed after 2 hits",
        "hog",
        2,
        True,
        {"sweep_levels": "aligned"},
        min_hits=2,
        sweep=1,
    ),
    "aligned-every-frame": Config(
        "motion-gated HOG, every frame, the exhaustive search's tall scales on each",
        "hog",
        1,
        True,
        {"sweep_levels": "aligned"},
        sweep=1,
    ),
    # the reference's own detector at the default's pace: what any detector searching every
    # 2nd frame can hope for against tracks made from every frame
    "exhaustive-every2": Config(
        "HOG 1.5x, whole frame, every 2nd frame (the reference's detector)", "hog", 2, False, {}
    ),
    "exhaustive-every2-hits2": Config(
        "HOG 1.5x, whole frame, every 2nd frame (the reference's detector), tracks confirmed "
        "after 2 hits",
        "hog",
        2,
        False,
        {},
        min_hits=2,
    ),
    "ssdlite": Config(
        "SSDlite320-MobileNetV3 (random weights: speed only), every 2nd frame, motion-gated",
        "torchvision:ssdlite320_mobilenet_v3_large",
        2,
        True,
        {},
    ),
    "frcnn-mobilenet": Config(
        "Faster R-CNN MobileNetV3-320-FPN in ONNX Runtime (random weights: speed only), every "
        "2nd frame, motion-gated",
        "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn",
        2,
        True,
        {},
    ),
    "frcnn-mobilenet-torch": Config(
        "Faster R-CNN MobileNetV3-320-FPN in PyTorch (random weights: speed only), every 2nd "
        "frame, motion-gated",
        "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn",
        2,
        True,
        {},
        runtime="torch",
    ),
}


def run_config(video: Path, config: Config, reference: list[dict[int, Box]]) -> dict:
    from footage.decode import VideoFile
    from footage.detect import HogDetector
    from footage.errors import FootageError
    from footage.ingest import Settings, ingest
    from footage.state import RunState

    defaults = Settings(camera="c", start=datetime(2024, 5, 1, tzinfo=UTC))
    settings = Settings(
        camera="c",
        start=defaults.start,
        detect_every=config.every,
        motion_gate=config.gate,
        min_hits=config.min_hits or defaults.min_hits,
        sweep_every=defaults.sweep_every if config.sweep is None else config.sweep,
    )
    if config.detector == "hog":
        hog = {"pyramid": 1.2 if config.gate else 1.05} | config.hog
        detector = HogDetector(**hog)
    else:
        detector = random_torchvision(config.detector.partition(":")[2], config.runtime)
    recorder = Recorder()
    cpu, wall = cpu_now(), time.perf_counter()
    source = VideoFile(video)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ingest(
                [source],
                detector,
                recorder,  # type: ignore[arg-type]
                settings,
                RunState(Path(tmp) / "state.jsonl"),
                key="bench",
                progress=False,
            )
        except FootageError as exc:  # random weights: nothing worth indexing, still timed
            print(f"({config.name}: {exc})")
    wall, cpu = time.perf_counter() - wall, cpu_now() - cpu
    found, total = recall(reference, recorder.crops)
    people, people_total = recall(people_only(reference), recorder.crops)
    return {
        "people": people,
        "people_total": people_total,
        "frames": source.frames,
        "wall": wall,
        "cpu": cpu,
        "tracks": recorder.tracks,
        "found": found,
        "total": total,
    }


def end_to_end(
    video: Path, checkpoint: str | None, reference: list[dict[int, Box]], extra: list[str]
) -> dict:
    """``sona footage add`` with its defaults into a real ``sona serve``: wall, CPU seconds
    of the command and of the service, and recall from the provenance the service returns."""
    import os
    import subprocess

    import httpx
    from _support import cpu_seconds, random_checkpoint, served

    sona = str(Path(sys.executable).parent / "sona")
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(checkpoint) if checkpoint else random_checkpoint(Path(tmp) / "tiny.pt")
        with served(model, Path(tmp) / "data") as (url, pid):
            before = cpu_seconds(pid)
            state = Path(tmp) / "state.jsonl"
            wall = time.perf_counter()
            proc = subprocess.Popen(
                [
                    sona,
                    "footage",
                    "add",
                    str(video),
                    "--camera=street",
                    "--start=2024-05-01T08:00:00+02:00",
                    "--gallery=e2e",
                    f"--url={url}",
                    f"--state={state}",
                    "--quiet",
                    *extra,
                ]
            )
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - wall
            service_cpu = cpu_seconds(pid) - before
            if status != 0:
                raise SystemExit(f"sona footage add failed ({status})")
            tracks = [
                json.loads(line)["track"]
                for line in state.read_text().splitlines()
                if '"done"' in line
            ]
            crops = []
            with httpx.Client(base_url=url, timeout=60) as client:
                for track in tracks:
                    body = client.get(f"/gallery/tracks/{track}", params={"gallery": "e2e"})
                    crops += [(i["frame"], tuple(i["box"])) for i in body.json()["items"]]
    found, total = recall(reference, crops)
    people, people_total = recall(people_only(reference), crops)
    return {
        "people": people,
        "people_total": people_total,
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "service_cpu": service_cpu,
        "tracks": len(tracks),
        "crops": len(crops),
        "found": found,
        "total": total,
        "model": model.name if checkpoint else "random tiny SONA-Net",
        "video_seconds": _duration(video),
    }


def live_lag(video: Path, seconds: float) -> dict:
    """vtest.avi streamed by Debian's ffmpeg (MPEG-TS over UDP on 127.0.0.1, real time) into
    ``sona footage add udp://...`` for ``seconds``: the lag from a person's last frame to
    their track's acknowledgement by the service (then searchable)."""
    import os
    import signal
    import statistics
    import subprocess
    from datetime import datetime as dt

    from _support import random_checkpoint, served

    from footage.replay import free_udp_port, replay

    port = free_udp_port()
    sona = str(Path(sys.executable).parent / "sona")
    with tempfile.TemporaryDirectory() as tmp:
        model = random_checkpoint(Path(tmp) / "tiny.pt")
        with served(model, Path(tmp) / "data") as (url, _):
            stream = replay(video, port)
            state = Path(tmp) / "live.jsonl"
            run = subprocess.Popen(
                [
                    sona,
                    "footage",
                    "add",
                    f"udp://127.0.0.1:{port}",
                    "--camera=live",
                    f"--url={url}",
                    f"--state={state}",
                    "--quiet",
                ]
            )
            time.sleep(seconds)
            run.send_signal(signal.SIGTERM)
            _, status, usage = os.wait4(run.pid, 0)
            stream.terminate()
            stream.wait()
            lags = []
            for line in state.read_text().splitlines():
                entry = json.loads(line)
                if entry.get("status") == "done":
                    sent, seen = (
                        dt.fromisoformat(entry["sent"]),
                        dt.fromisoformat(entry["last_seen"]),
                    )
                    lags.append((sent - seen).total_seconds())
    return {
        "tracks": len(lags),
        "median": statistics.median(lags) if lags else float("nan"),
        "max": max(lags, default=float("nan")),
        "cpu": usage.ru_utime + usage.ru_stime,
        "seconds": seconds,
        "status": status,
    }


def stages(video: Path, count: int) -> list[tuple[str, float, float]]:
    """Each stage alone on the first ``count`` frames: (stage, frames per wall second, frames
    per CPU second). The CNNs have random weights (their speed only)."""
    from footage.decode import VideoFile
    from footage.detect import HogDetector
    from footage.motion import MotionGate

    frames = []
    for frame in VideoFile(video).sample(1):
        frames.append(frame)
        if len(frames) >= count:
            break
    out = []

    def timed(name: str, work) -> None:
        cpu, wall = cpu_now(), time.perf_counter()
        work()
        wall, cpu = time.perf_counter() - wall, cpu_now() - cpu
        out.append((name, len(frames) / wall, len(frames) / max(cpu, 1e-9)))
        print(f"| {name} | {out[-1][1]:.1f} | {out[-1][2]:.1f} |", flush=True)

    print("\n| stage (frames of vtest.avi) | frames/s (wall) | frames per CPU s |\n|---|---|---|")

    def decode() -> None:
        for n, _ in enumerate(VideoFile(video).sample(1)):
            if n + 1 >= count:
                break

    timed("decode (OpenCV's FFmpeg, BGR)", decode)
    gate = MotionGate()
    regions = {}

    def motion() -> None:
        for f in frames:
            regions[f.index] = gate.regions(f.image)

    timed("motion gate (MOG2 on a half-size copy, regions)", motion)
    fine = HogDetector(pyramid=1.2)
    timed(
        "HOG 1.5x, step 1.2, moving regions only",
        lambda: [fine.detect_in(f.index, f.image, regions[f.index]) for f in frames],
    )
    timed(
        "HOG sweep (whole frame at 0.8x, coarse scales)",
        lambda: [fine.sweep(f.index, f.image, []) for f in frames],
    )
    full = HogDetector()
    timed(
        "HOG 1.5x, step 1.05, whole frame (the exhaustive reference)",
        lambda: [full.detect(f.index, f.image) for f in frames],
    )
    for name, runtime, batch in (
        ("ssdlite320_mobilenet_v3_large", "torch", 1),
        ("ssdlite320_mobilenet_v3_large", "torch", 4),
        ("fasterrcnn_mobilenet_v3_large_320_fpn", "torch", 1),
        ("fasterrcnn_mobilenet_v3_large_320_fpn", "torch", 4),
        ("fasterrcnn_mobilenet_v3_large_320_fpn", "onnx", 1),
    ):
        net = random_torchvision(name, runtime, batch)
        net.detect(0, frames[0].image)  # warm
        items = [(f.index, f.image) for f in frames]
        timed(
            f"{name} random weights, {'ONNX Runtime' if runtime == 'onnx' else 'PyTorch'}, "
            f"{batch} frame{'s' if batch > 1 else ''} a pass",
            lambda net=net, items=items, batch=batch: [
                net.detect_many(items[i : i + batch]) for i in range(0, len(items), batch)
            ],
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", nargs="?", default=str(VTEST), help="video (default vtest.avi)")
    parser.add_argument(
        "--configs",
        default="default,exhaustive",
        help=f"which, comma-separated, of: {', '.join(CONFIGS)}",
    )
    parser.add_argument("--cache", default="data/bench", help="where the reference is kept")
    parser.add_argument(
        "--end-to-end", action="store_true", help="also sona footage add into sona serve"
    )
    parser.add_argument("--checkpoint", help="the service's model (default: random tiny)")
    parser.add_argument(
        "--footage-args",
        default="",
        metavar="OPTIONS",
        help="options added to sona footage add in --end-to-end, e.g. '--sweep-every=1' "
        "(default: none, its defaults)",
    )
    parser.add_argument(
        "--live", type=float, metavar="SECONDS", help="also a live stream for SECONDS (ffmpeg)"
    )
    parser.add_argument(
        "--stages",
        type=int,
        metavar="FRAMES",
        help="first, each stage alone on this many frames (decode, gate, HOG, CNNs)",
    )
    args = parser.parse_args()
    unknown = [name for name in args.configs.split(",") if name not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration {', '.join(unknown)}: one of {', '.join(CONFIGS)}")
    video = Path(args.video)
    if args.stages:
        stages(video, args.stages)
    reference = reference_tracks(video, Path(args.cache))
    people = people_only(reference)
    print(
        f"video {video.name}; reference tracks (exhaustive HOG 1.5x): {len(reference)}, "
        f"{len(people)} of person height"
    )
    print(
        "\n| configuration | frames/s (wall) | CPU s | frames/CPU s | tracks indexed "
        "| recall, person-height tracks | recall, all reference tracks |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.configs.split(","):
        config = CONFIGS[name]
        r = run_config(video, config, reference)
        print(
            f"| {config.name} | {r['frames'] / r['wall']:.1f} | {r['cpu']:.1f} "
            f"| {r['frames'] / r['cpu']:.1f} | {r['tracks']} "
            f"| {r['people']}/{r['people_total']} = {r['people'] / max(r['people_total'], 1):.2f} "
            f"| {r['found']}/{r['total']} = {r['found'] / max(r['total'], 1):.2f} |",
            flush=True,
        )
    if args.end_to_end:
        r = end_to_end(video, args.checkpoint, reference, args.footage_args.split())
        print(
            f"\nend to end, sona footage add {args.footage_args or 'with its defaults'} into sona "
            f"serve ({r['model']}):"
            f" {r['wall']:.1f} s wall for {video.name}; CPU s: command {r['cpu']:.1f}, "
            f"service {r['service_cpu']:.1f}; {r['tracks']} tracks, {r['crops']} crops; "
            f"recall from the service's provenance: person-height tracks {r['people']}/"
            f"{r['people_total']} = {r['people'] / max(r['people_total'], 1):.2f}, all reference "
            f"tracks {r['found']}/{r['total']} = {r['found'] / max(r['total'], 1):.2f}"
        )
        per_second = (r["cpu"] + r["service_cpu"]) / r["video_seconds"]
        print(
            f"CPU seconds per second of one 10 fps camera (command + service): {per_second:.3f};"
            f" 10 fps cameras two cores keep up with: {2 / per_second:.1f}"
        )
    if args.live:
        r = live_lag(video, args.live)
        print(
            f"\nlive stream (ffmpeg, UDP, {r['seconds']:g} s): {r['tracks']} tracks; lag from a "
            f"person's last frame to the track acknowledged: median {r['median']:.1f} s, max "
            f"{r['max']:.1f} s; command CPU {r['cpu']:.1f} s; exit status {r['status']}"
        )


if __name__ == "__main__":
    main()
