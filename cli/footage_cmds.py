"""``sona footage add``: camera footage (a video, a folder of videos, an image sequence) to a
searchable gallery of tracked people, through a running service's HTTP API."""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .detector_options import (
    DetectorChoice,
    add_clip_options,
    check_footage_options,
    people_finder,
)
from .errors import UserError

__all__ = ["add_parsers"]


def _cmd_footage_add(args: argparse.Namespace) -> int:
    if args.sites or args.video is None:
        from .footage_site import run_site

        if args.training_set:  # cameras in parallel would write one tracks.json at once
            raise UserError("--training-set is for one camera: export a site's cameras one by one")

        return run_site(args, _one_camera)
    if args.workers is not None:
        raise UserError("--workers is for --sites or several --camera CAMERA=SOURCE")
    if len(args.camera) != 1 or "=" in args.camera[0]:
        raise UserError("give one --camera CAMERA with VIDEO (CAMERA=SOURCE is for a site)")
    return _one_camera(argparse.Namespace(**{**vars(args), "camera": args.camera[0]}))


def _one_camera(args: argparse.Namespace) -> int:
    from footage.decode import open_sources
    from footage.ingest import Settings, ingest
    from footage.live import is_stream
    from footage.state import RunState, default_state_path, run_key
    from footage.upload import TrackUploader

    stream = is_stream(args.video)
    if stream:
        if args.training_set:
            raise UserError("--training-set is for files, not live streams")
        if args.start is not None:
            raise UserError("--start is for files: a live stream's crops take the wall clock")
        if args.detections or args.duration is not None or args.fps is not None:
            raise UserError("--detections, --duration and --fps are for files, not live streams")
    elif args.start is None:
        raise UserError("--start is required for a file or folder (the first frame's time)")
    if args.flush_every <= 0:
        raise UserError("--flush-every must be > 0")
    start = check_footage_options(args, max_crops=64, why=" (one request per track)")
    if stream:  # a live stream's crops take the wall clock
        start = datetime.now(UTC).astimezone()
    if not args.camera or "," in args.camera:
        raise UserError("--camera must be a non-empty name without commas")
    choice = people_finder(args)
    detector = choice.detector
    if stream:
        return _watch(args, choice)
    sources = open_sources(Path(args.video), args.fps, args.duration)
    if args.detections and len(sources) > 1:
        raise UserError("--detections holds one video's detections: give one video, not a folder")
    settings = Settings(
        camera=args.camera,
        start=start,
        crops_per_track=args.crops_per_track,
        min_height=args.min_height,
        min_motion=args.min_motion,
        detect_every=choice.detect_every,
        motion_gate=choice.motion_gate,
        sweep_every=choice.sweep_every,
    )
    key = run_key(
        *(str(Path(getattr(s, "path", args.video)).resolve()) for s in sources),
        *(f"{s.frames}/{s.fps}/{s.width}x{s.height}" for s in sources),
        args.camera,
        start.isoformat(),
        args.gallery,
        args.url.rstrip("/"),
        detector.describe(),
        settings.describe(),
    )
    state = RunState(Path(args.state) if args.state else default_state_path(key))
    training = _training_writer(args, start, state.complete)
    uploader = TrackUploader(args.url, args.gallery, api_key=args.api_key, retries=args.retries)
    try:
        report = ingest(
            sources,
            detector,
            uploader,
            settings,
            state,
            key=key,
            progress=not args.quiet,
            position=getattr(args, "position", None),
            on_indexed=training.add if training else None,
        )
    finally:
        uploader.close()
        state.close()
    if training:
        done = training.close(sources, detector)
        print(
            f"training set: {done.written} tracks with {done.crops} crops (camera "
            f"c{done.camera_number}) -> {training.out}"
        )
    where = f"gallery '{args.gallery}' at {args.url}"
    if report.already_complete:
        print(f"already indexed into {where} ({report.skipped} tracks; state {state.path})")
        return 0
    print(f"{report.summary()}; {where}")
    if report.items:
        ids = sorted(report.items)
        print(f"track ids {ids[0]} to {ids[-1]}" if len(ids) > 1 else f"track id {ids[0]}")
    return 0


def _training_writer(args: argparse.Namespace, start: datetime, complete: bool) -> Any:
    """``--training-set DIR``: the writer of ``sona footage export-training``, handed each
    track this run indexes (None without the option)."""
    if not args.training_set:
        return None
    from footage.training_set import ExportSettings, TrainingSetWriter

    if complete:
        raise UserError(
            "this footage is already indexed (nothing to write to --training-set): use sona "
            "footage export-training, or --state with a new file"
        )
    if not 1 <= args.training_crops <= 256:
        raise UserError("--training-crops must be from 1 to 256")
    settings = ExportSettings(
        camera=args.camera,
        start=start,
        crops_per_track=args.training_crops,
        min_height=args.min_height,
        min_motion=args.min_motion,
    )
    return TrainingSetWriter(Path(args.training_set), settings)


def _add_training_options(add: argparse.ArgumentParser) -> None:
    add.add_argument(
        "--training-set",
        metavar="DIR",
        help="also write each indexed track's crops as a training set, as sona footage "
        "export-training does (files only)",
    )
    add.add_argument(
        "--training-crops",
        type=int,
        default=16,
        help="with --training-set: crops written per track, spread over its time",
    )


def _watch(args: argparse.Namespace, choice: DetectorChoice) -> int:
    """A live stream until SIGINT or SIGTERM: the open tracks are sent, then exit 0."""
    import signal
    import threading

    from footage.ingest import Settings
    from footage.live import public_url, watch
    from footage.state import RunState, default_state_path, run_key
    from footage.upload import TrackUploader

    settings = Settings(
        camera=args.camera,
        start=datetime.now(UTC),
        crops_per_track=args.crops_per_track,
        min_height=args.min_height,
        min_motion=args.min_motion,
        detect_every=choice.detect_every,
        motion_gate=choice.motion_gate,
        sweep_every=choice.sweep_every,
    )
    detector = choice.detector
    key = run_key(
        public_url(args.video),
        args.camera,
        args.gallery,
        args.url.rstrip("/"),
        detector.describe(),
        settings.describe(),
    )
    state = RunState(Path(args.state) if args.state else default_state_path(key))
    uploader = TrackUploader(args.url, args.gallery, api_key=args.api_key, retries=args.retries)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        report = watch(
            args.video,
            detector,
            uploader,
            settings,
            state,
            key=key,
            stop=stop,
            retries=args.retries,
            flush_seconds=args.flush_every,
            progress=not args.quiet,
            position=getattr(args, "position", None),
        )
    finally:
        uploader.close()
        state.close()
    print(
        f"{public_url(args.video)}: {report.frames} frames in {report.clips} connections, "
        f"{report.tracks} tracks, {report.indexed} parts indexed with {report.crops} crops; "
        f"gallery '{args.gallery}' at {args.url}"
    )
    return 0


def add_parsers(sub: Any) -> None:
    footage = sub.add_parser("footage", help="index camera footage: people tracked, crops chosen")
    footage_sub = footage.add_subparsers(dest="footage_command", metavar="ACTION", required=True)
    add = footage_sub.add_parser(
        "add",
        help="find, track and index the people of a video",
        description="Decode VIDEO (a video file, a folder of videos taken one after the other, "
        "or a folder of images with --fps), find people (--detector or --detections), track "
        "them, choose a few good crops per track and index them into a running service's "
        "gallery with camera, time and track id. An interrupted run started again with the "
        "same arguments skips the tracks it indexed.",
    )
    add.add_argument(
        "video",
        nargs="?",
        metavar="VIDEO",
        help="video file, folder of videos or of images, or a live stream's URL (rtsp://, "
        "http://, udp://...: indexed until SIGINT or SIGTERM)",
    )
    add.add_argument(
        "--camera",
        action="append",
        default=[],
        metavar="CAMERA[=SOURCE]",
        help="camera id of VIDEO; or, without VIDEO, CAMERA=SOURCE once per camera of a site, "
        "run in parallel (all with the same --start; streams need none)",
    )
    add.add_argument(
        "--sites",
        metavar="CSV",
        help="a site's cameras, one per row: camera_id,source,start (start empty for a live "
        "stream), run in parallel worker processes",
    )
    add.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="cameras indexed at once with --sites or several --camera (default: one per "
        "core); each live stream needs its own",
    )
    add.add_argument(
        "--start",
        help="time of the first frame, ISO 8601 with the camera's UTC offset, e.g. "
        "2024-05-01T08:00:00+02:00 (required for files; frame times follow the stream; a "
        "live stream takes the wall clock)",
    )
    add.add_argument(
        "--flush-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="live streams: a person still in view is indexed this often under the same "
        "track id (default 60); a track is indexed as soon as the person leaves",
    )
    add.add_argument("--gallery", default="default", help="gallery name (default 'default')")
    add.add_argument(
        "--url",
        default="http://127.0.0.1:8000",
        help="service root URL (default http://127.0.0.1:8000, where make serve listens)",
    )
    add.add_argument(
        "--api-key", default=os.environ.get("SONA_API_KEY"), help="API key (default: SONA_API_KEY)"
    )
    add_clip_options(add, crops=4, verb="indexed")
    add.add_argument(
        "--state",
        metavar="FILE",
        help="where the run writes what it indexed (default: a file under "
        "$XDG_CACHE_HOME/sona/footage named for the clip, gallery and settings)",
    )
    add.add_argument(
        "--retries",
        type=int,
        default=8,
        help="retries of a busy or unreachable service, with back-off (default 8)",
    )
    add.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_training_options(add)
    add.set_defaults(handler=_cmd_footage_add)
    from .adapt_cmds import add_export_parser

    add_export_parser(footage_sub)
