"""Learning from a site's own footage: ``sona footage export-training`` (tracks to a training
set) and ``sona adapt`` (export, adapt a checkpoint, score before and after, export to serve)."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import UserError

__all__ = ["add_export_parser", "add_parsers", "detector_from_args", "export_footage"]


def detector_from_args(args: argparse.Namespace) -> Any:
    """The person detector the options name: det.txt, torchvision weights, or HOG."""
    from footage.detect import FileDetector, HogDetector, TorchvisionDetector

    if args.detections:
        return FileDetector(Path(args.detections), min_score=args.min_score)
    if args.detector == "torchvision":
        if not args.weights:
            raise UserError("--detector torchvision needs --weights FILE (nothing is downloaded)")
        return TorchvisionDetector(
            Path(args.weights),
            args.torchvision_model,
            min_score=0.3 if args.min_score is None else args.min_score,
            device=args.device,
        )
    if args.weights:
        raise UserError("--weights is for --detector torchvision")
    return HogDetector(
        upscale=args.hog_upscale, min_score=0.0 if args.min_score is None else args.min_score
    )


def export_footage(
    video: Path, output: Path, camera: str, args: argparse.Namespace, start: datetime | None
) -> Any:
    """One camera's clips into the training-set folder ``output``; returns the report."""
    from footage.decode import open_sources
    from footage.training_set import ExportSettings, export_training_set

    if not camera or "," in camera or "/" in camera:
        raise UserError(f"camera name {camera!r} must be non-empty, without ',' or '/'")
    detector = detector_from_args(args)
    sources = open_sources(video, args.fps, args.duration)
    if args.detections and len(sources) > 1:
        raise UserError("--detections holds one video's detections: give one video, not a folder")
    settings = ExportSettings(
        camera=camera,
        start=start,
        crops_per_track=args.crops_per_track,
        min_height=args.min_height,
        min_motion=args.min_motion,
    )
    return export_training_set(sources, detector, settings, output, progress=not args.quiet)


def check_footage_options(args: argparse.Namespace) -> datetime | None:
    """The footage options' values checked; returns ``--start`` parsed (or None)."""
    for name, low in (("crops_per_track", 1), ("min_height", 1)):
        if getattr(args, name) < low:
            raise UserError(f"--{name.replace('_', '-')} must be at least {low}")
    if args.crops_per_track > 256:
        raise UserError("--crops-per-track is at most 256")
    if args.min_motion < 0:
        raise UserError("--min-motion must be >= 0")
    if args.fps is not None and args.fps <= 0:
        raise UserError("--fps must be > 0")
    if args.duration is not None and args.duration <= 0:
        raise UserError("--duration must be > 0")
    if not getattr(args, "start", None):
        return None
    try:
        start = datetime.fromisoformat(args.start)
    except ValueError:
        raise UserError(f"--start {args.start!r} is not an ISO 8601 time") from None
    if start.tzinfo is None:
        raise UserError("--start needs the camera's UTC offset, e.g. 2024-05-01T08:00:00+02:00")
    return start


def _cmd_export(args: argparse.Namespace) -> int:
    start = check_footage_options(args)
    report = export_footage(Path(args.video), Path(args.output), args.camera, args, start)
    print(f"{report.summary()} -> {args.output}")
    return 0


def add_footage_options(parser: argparse.ArgumentParser, *, crops: int = 16) -> None:
    """Detector, tracking and crop options shared by export-training and adapt."""
    parser.add_argument(
        "--detector",
        choices=["hog", "torchvision"],
        default="hog",
        help="hog: OpenCV's built-in pedestrian detector, no weights; torchvision: a COCO "
        "detector from --weights (default hog)",
    )
    parser.add_argument(
        "--detections", metavar="DET_TXT", help="MOTChallenge det.txt detections of the video"
    )
    parser.add_argument("--weights", metavar="FILE", help="COCO weights for --detector torchvision")
    parser.add_argument(
        "--torchvision-model",
        default="fasterrcnn_resnet50_fpn",
        help="torchvision architecture of --weights",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    parser.add_argument(
        "--min-score",
        type=float,
        help="drop detections scoring less (default: hog 0, torchvision 0.3, det.txt none)",
    )
    parser.add_argument(
        "--hog-upscale", type=float, default=1.5, help="enlarge frames this much for HOG"
    )
    parser.add_argument(
        "--crops-per-track",
        type=int,
        default=crops,
        help=f"crops written per track, spread over its time (default {crops})",
    )
    parser.add_argument(
        "--min-height", type=int, default=80, help="shortest person, in pixels, kept as a crop"
    )
    parser.add_argument(
        "--min-motion",
        type=float,
        default=0.5,
        help="leave out tracks moving less than this many of the person's heights "
        "(a detector's false alarms on still things); 0 keeps all",
    )
    parser.add_argument("--fps", type=float, help="frame rate (needed for a folder of images)")
    parser.add_argument(
        "--duration", type=float, metavar="SECONDS", help="only the first SECONDS of each clip"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_export_parser(footage_sub: Any) -> None:
    """``sona footage export-training``, registered under ``sona footage``."""
    export = footage_sub.add_parser(
        "export-training",
        help="write a video's tracks as a training set (track = identity)",
        description="Find and track the people of VIDEO (a video, a folder of videos taken one "
        "after the other, or of images with --fps) and write, for each track, up to "
        "--crops-per-track crops spread over its time into OUTPUT/<track>/ with Market-style "
        "names (track, camera, frame), plus OUTPUT/tracks.json with each track's camera and "
        "time span. OUTPUT loads with `sona train --dataset custom --data OUTPUT` and scores "
        "with `sona eval --tracks OUTPUT`. Export each camera into the same OUTPUT with its "
        "own --camera.",
    )
    export.add_argument("video", metavar="VIDEO", help="video file, folder of videos or of images")
    export.add_argument("--output", required=True, metavar="DIR", help="training-set folder")
    export.add_argument("--camera", required=True, help="camera name of this footage")
    export.add_argument(
        "--start", help="time of the first frame, ISO 8601 with UTC offset (optional)"
    )
    add_footage_options(export)
    export.set_defaults(handler=_cmd_export)


def add_parsers(sub: Any) -> None:
    """Top-level commands of this group (``sona adapt``)."""
