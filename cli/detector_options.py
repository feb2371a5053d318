"""How footage commands find people: one set of options (``add_detector_options``) and one
reading of them (``people_finder``), shared by ``sona footage add``, ``sona footage
export-training`` and ``sona adapt``, so that a site's footage is searched the same way for
its gallery and for its training set. The other options the three share, which crops of a
track are kept and which part of a clip is read, are added by ``add_clip_options`` and checked
by ``check_footage_options``, so that each command describes and refuses them in the same
words."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import UserError

__all__ = [
    "DetectorChoice",
    "add_clip_options",
    "add_detector_options",
    "check_footage_options",
    "people_finder",
]

_DEFAULT_TORCHVISION = "fasterrcnn_resnet50_fpn"


@dataclass(frozen=True)
class DetectorChoice:
    """The detector and where and how often it looks (``footage.finder.Finder``'s settings)."""

    detector: Any
    detect_every: int
    motion_gate: bool
    sweep_every: int


def check_footage_options(
    args: argparse.Namespace, max_crops: int, why: str = ""
) -> datetime | None:
    """The options every footage command has (crops per track, at most ``max_crops``; sizes,
    motion, --fps, --duration) checked; returns ``--start`` parsed, None when not given."""
    for name in ("crops_per_track", "min_height"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if args.crops_per_track > max_crops:
        raise UserError(f"--crops-per-track is at most {max_crops}{why}")
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


def people_finder(args: argparse.Namespace) -> DetectorChoice:
    """The options of ``add_detector_options`` checked and turned into a detector; a user's
    mistake is a ``UserError`` (one line)."""
    if args.detect_every < 1:
        raise UserError("--detect-every must be at least 1")
    if args.sweep_every < 0:
        raise UserError("--sweep-every must be >= 0")
    if args.detector_batch is not None and args.detector_batch < 1:
        raise UserError("--detector-batch must be at least 1")
    every, gate, sweep = args.detect_every, not args.no_motion_gate, args.sweep_every
    if args.exhaustive or args.detections:  # a det.txt holds every frame's people already
        every, gate, sweep = 1, False, 0
    return DetectorChoice(_detector(args, gate), every, gate, sweep if gate else 0)


def _detector(args: argparse.Namespace, gate: bool) -> Any:
    from footage.detect import TORCHVISION_MODELS, HogDetector, TorchvisionDetector
    from footage.motchallenge import FileDetector

    if args.detections:
        if args.weights:
            raise UserError("--weights is for --detector torchvision:NAME, not --detections")
        return FileDetector(Path(args.detections), min_score=args.min_score)
    kind, _, name = args.detector.partition(":")
    if kind == "torchvision":
        name = name or _DEFAULT_TORCHVISION
        if name not in TORCHVISION_MODELS:
            raise UserError(
                f"--detector torchvision:{name}: torchvision has no such COCO detector here "
                f"(one of {', '.join(TORCHVISION_MODELS)})"
            )
        return TorchvisionDetector(
            Path(args.weights) if args.weights else None,
            name,
            min_score=0.3 if args.min_score is None else args.min_score,
            device=args.device,
            runtime=args.detector_runtime,
            batch=args.detector_batch,
        )
    if kind != "hog" or name:
        raise UserError(f"--detector {args.detector!r}: hog or torchvision:NAME")
    if args.weights:
        raise UserError("--weights is for --detector torchvision:NAME")
    pyramid = args.hog_pyramid or (1.2 if gate else 1.05)
    if pyramid <= 1:
        raise UserError("--hog-pyramid must be > 1")
    if args.hog_upscale <= 0:
        raise UserError("--hog-upscale must be > 0")
    return HogDetector(
        upscale=args.hog_upscale,
        min_score=0.0 if args.min_score is None else args.min_score,
        pyramid=pyramid,
    )


def add_detector_options(parser: argparse.ArgumentParser) -> None:
    """--detector, --detections, --weights, --device, --min-score, the HOG settings and where
    and how often to look (--detect-every, --no-motion-gate, --sweep-every, --exhaustive)."""
    parser.add_argument(
        "--detector",
        default="hog",
        metavar="hog|torchvision:NAME",
        help="hog: OpenCV's built-in pedestrian detector, no weights; torchvision:NAME: a "
        "torchvision COCO detector (ssdlite320_mobilenet_v3_large, "
        "fasterrcnn_mobilenet_v3_large_320_fpn, fasterrcnn_resnet50_fpn_v2, ...; plain "
        f"torchvision is {_DEFAULT_TORCHVISION}) with its weights from --weights FILE or "
        "downloaded once into the torch cache (default hog)",
    )
    parser.add_argument(
        "--detections",
        metavar="DET_TXT",
        help="use these MOTChallenge det.txt detections instead of a detector",
    )
    parser.add_argument(
        "--weights",
        metavar="FILE",
        help="COCO weights (a state-dict file) for --detector torchvision:NAME, for machines "
        "without internet (default: torchvision's, downloaded once)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="torchvision detector device: auto, cpu, cuda:N (default auto: CUDA when present)",
    )
    parser.add_argument(
        "--detector-runtime",
        choices=["auto", "torch", "onnx"],
        default="auto",
        help="torchvision detectors: run in PyTorch or exported to ONNX Runtime (Faster R-CNN "
        "only); auto: ONNX Runtime on a CPU for the models measured faster there (default auto)",
    )
    parser.add_argument(
        "--detector-batch",
        type=int,
        metavar="N",
        help="torchvision detectors in PyTorch: frames per forward pass (default 8 on a GPU; on "
        "a CPU 4 for SSDlite, 1 for the others, which batches did not speed up)",
    )
    parser.add_argument(
        "--min-score",
        type=float,
        help="drop detections scoring less (default: hog 0, torchvision 0.3, det.txt none)",
    )
    parser.add_argument(
        "--hog-upscale",
        type=float,
        default=1.5,
        help="enlarge frames this much for HOG, which misses people under about 100 pixels "
        "otherwise (default 1.5)",
    )
    parser.add_argument(
        "--hog-pyramid",
        type=float,
        help="HOG's step between scales (default 1.2 with the motion gate, 1.05 without: "
        "finer finds a few more people, slower)",
    )
    parser.add_argument(
        "--detect-every",
        type=int,
        default=2,
        metavar="K",
        help="run the detector on every K-th frame; the tracker carries people across the "
        "frames between (default 2: 10 fps footage is searched 5 times a second)",
    )
    parser.add_argument(
        "--no-motion-gate",
        action="store_true",
        help="search the whole frame; by default only the regions that moved (background "
        "subtraction: for fixed cameras) are searched",
    )
    parser.add_argument(
        "--sweep-every",
        type=int,
        default=0,
        metavar="N",
        help="with the motion gate and HOG: every N-th searched frame is also swept whole at "
        "coarse scales for boxes over about 144 pixels tall (groups walking together, people "
        "near the camera), which the moving regions are too small for; about doubles HOG's "
        "time at N=1 (default 0: never)",
    )
    parser.add_argument(
        "--exhaustive",
        action="store_true",
        help="every frame, whole frame: the slow reference (--detect-every 1 --no-motion-gate)",
    )


def add_clip_options(parser: argparse.ArgumentParser, *, crops: int, verb: str) -> None:
    """The detector options, then which crops of a clip's tracks are kept (``verb``: what is
    done with them, "indexed" or "written") and which part of the clip is read."""
    add_detector_options(parser)
    parser.add_argument(
        "--crops-per-track",
        type=int,
        default=crops,
        help=f"crops {verb} per track, spread over its time (default {crops})",
    )
    parser.add_argument(
        "--min-height",
        type=int,
        default=80,
        help=f"shortest person, in pixels, whose crop may be {verb} (default 80)",
    )
    parser.add_argument(
        "--min-motion",
        type=float,
        default=0.5,
        help="leave out tracks whose box centre moves less than this many of the person's "
        "heights (pro rata for tracks under 2 s): detectors' false alarms on still things; 0 "
        "keeps people standing still (default 0.5)",
    )
    parser.add_argument(
        "--fps",
        type=float,
        help="frame rate: needed for a folder of images; for a video it overrides the stream's "
        "(default: the stream's)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="only the first SECONDS of each clip (default: all of it)",
    )
