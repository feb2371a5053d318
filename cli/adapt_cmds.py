"""Learning from a site's own footage: ``sona footage export-training`` (tracks to a training
set) and ``sona adapt`` (export, adapt a checkpoint, score before and after, export to serve)."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

from .detector_options import add_clip_options, check_footage_options, people_finder
from .errors import UserError

__all__ = [
    "adapt_config",
    "add_export_parser",
    "add_parsers",
    "add_track_eval_options",
    "eval_tracks",
    "export_footage",
    "split_tracks",
]


def export_footage(
    video: Path, output: Path, camera: str, args: argparse.Namespace, start: datetime | None
) -> Any:
    """One camera's clips into the training-set folder ``output``; returns the report."""
    from footage.decode import open_sources
    from footage.training_set import ExportSettings, export_training_set

    if not camera or "," in camera or "/" in camera:
        raise UserError(f"camera name {camera!r} must be non-empty, without ',' or '/'")
    choice = people_finder(args)
    sources = open_sources(video, args.fps, args.duration)
    if args.detections and len(sources) > 1:
        raise UserError("--detections holds one video's detections: give one video, not a folder")
    settings = ExportSettings(
        camera=camera,
        start=start,
        crops_per_track=args.crops_per_track,
        min_height=args.min_height,
        min_motion=args.min_motion,
        detect_every=choice.detect_every,
        motion_gate=choice.motion_gate,
        sweep_every=choice.sweep_every,
    )
    return export_training_set(sources, choice.detector, settings, output, progress=not args.quiet)


def _cmd_export(args: argparse.Namespace) -> int:
    start = check_footage_options(args, max_crops=256)
    report = export_footage(Path(args.video), Path(args.output), args.camera, args, start)
    print(f"{report.summary()} -> {args.output}")
    return 0


def add_footage_options(parser: argparse.ArgumentParser, *, crops: int = 16) -> None:
    """Detector, tracking and crop options shared by export-training and adapt."""
    add_clip_options(parser, crops=crops, verb="written")
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


def add_track_eval_options(parser: argparse.ArgumentParser) -> None:
    """``sona eval --tracks`` and its protocol's options (``sona adapt`` shares them)."""
    parser.add_argument(
        "--tracks",
        metavar="DIR",
        help="score on a site's own footage instead of --dataset: a folder written by sona "
        "footage export-training, tracks as identities, cosine distance, beside raw pixels and "
        "a random network",
    )
    add_split_options(parser)
    parser.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="random networks scored as a floor, one per seed (default 3)",
    )


def add_split_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gap",
        type=float,
        default=5.0,
        help="a query matches crops of its own track only this many seconds away or more "
        "(default 5)",
    )
    parser.add_argument(
        "--split-at",
        type=float,
        metavar="SECONDS",
        help="time that splits the tracks in two, in seconds from the footage's start; tracks "
        "running across it are left out (default: the middle of the tracks' time span)",
    )
    parser.add_argument(
        "--score",
        choices=["later", "earlier", "all"],
        default="later",
        help="the tracks scored: those after --split-at (adapt on the earlier ones), before "
        "it, or all of them (no split: for a model that never saw this footage) "
        "(default later)",
    )


def split_tracks(args: argparse.Namespace, folder: str | Path) -> tuple[Any, list, list, str]:
    """The folder's tracks as (set, scored, the others for training, a line saying which)."""
    from training.tracks import load_tracks, time_split

    track_set = load_tracks(folder)
    if args.gap < 0:
        raise UserError("--gap must be >= 0")
    if args.score == "all":
        scored, others = list(track_set.tracks), []
        if len(scored) < 2:
            raise UserError(f"{folder}: {len(scored)} track; scoring needs at least 2")
        return track_set, scored, others, f"all {len(scored)} tracks"
    lo, hi = track_set.span
    at = (lo + hi) / 2 if args.split_at is None else args.split_at
    earlier, later, across = time_split(track_set, at)
    scored, others = (later, earlier) if args.score == "later" else (earlier, later)
    for name, part in (("before", earlier), ("after", later)):
        if len(part) < 2:
            raise UserError(
                f"{folder}: {len(part)} track(s) end {name} {at:.1f} s (of {lo:.1f} to "
                f"{hi:.1f} s; {across} run across it); each side of --split-at needs at least 2"
            )
    where = "after" if args.score == "later" else "before"
    line = (
        f"{len(scored)} tracks {where} {at:.1f} s scored; {len(others)} on the other side; "
        f"{across} across the split left out"
    )
    return track_set, scored, others, line


def eval_tracks(args: argparse.Namespace) -> int:
    """``sona eval --tracks DIR [CHECKPOINT ...]``: the table of the tracks protocol."""
    from model.checkpoint import checkpoint_config, read_checkpoint

    if args.seeds < 0:
        raise UserError("--seeds must be >= 0")
    configs = [checkpoint_config(read_checkpoint(p), p) for p in args.checkpoints]
    _, scored, _, line = split_tracks(args, args.tracks)
    rows = score_methods(scored, args.checkpoints, configs, args.seeds, args.device, args.gap)
    _print_table(rows, scored, args.gap, line)
    return 0


def score_methods(
    scored: list,
    checkpoints: list,
    configs: list,
    seeds: int,
    device: str,
    gap: float,
    *,
    mean_row: bool = True,
) -> list:
    """Raw pixels, ``seeds`` random networks and each checkpoint, scored on ``scored``."""
    from model import load_checkpoint
    from model.device import resolve_device
    from training.track_eval import (
        network_features,
        pixel_features,
        random_network,
        score_rows,
    )

    dev = resolve_device(device)
    methods: list[tuple[str, list]] = [("raw pixels", [pixel_features(scored)])]
    if seeds:
        config = configs[0] if configs else None
        nets = [random_network(config, seed).to(dev) for seed in range(seeds)]
        methods.append(("random network", [network_features(n, scored, dev) for n in nets]))
    for path in checkpoints:
        net, _ = load_checkpoint(path, dev)
        methods.append((str(path), [network_features(net, scored, dev)]))
    rows = score_rows(methods, scored, gap)
    if mean_row and len(checkpoints) > 1:
        from training.track_eval import Row

        joined = tuple(s for r in rows[-len(checkpoints) :] for s in r.scores)
        rows.append(Row(f"mean ({len(checkpoints)} checkpoints)", joined))
    if rows[0].scores[0].queries == 0:
        raise UserError(
            f"no crop has a crop of its own track {gap:g} s away or more: nothing to score "
            "(a smaller --gap, or longer footage)"
        )
    return rows


def _print_table(rows: list, scored: list, gap: float, line: str) -> None:
    from training.track_eval import table

    print(table(rows))
    crops = sum(len(t.crops) for t in scored)
    print(
        f"({line}; {crops} crops, {rows[0].scores[0].queries} queries with a crop of their own "
        f"track >= {gap:g} s away; cosine distance; rank-1 and mAP in %, mean ± std over runs)"
    )


def _sites(path: Path) -> list[tuple[str, Path, datetime | None]]:
    """``cameras.csv``: a header ``camera,path`` and optionally ``start``; paths relative to
    the file's folder."""
    import csv

    if not path.is_file():
        raise UserError(f"--sites {path}: no such file")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"camera", "path"} <= set(rows[0]):
        raise UserError(f"--sites {path}: expected a header camera,path[,start] and a row a camera")
    sites = []
    for n, row in enumerate(rows, 2):
        start = None
        if row.get("start"):
            try:
                start = datetime.fromisoformat(row["start"])
            except ValueError:
                raise UserError(
                    f"--sites {path}, line {n}: start {row['start']!r} is not ISO 8601"
                ) from None
        sites.append((row["camera"].strip(), path.parent / row["path"].strip(), start))
    return sites


def _training_set(args: argparse.Namespace, folder: Path) -> None:
    """Footage to the training-set ``folder`` (kept: a second run reuses it)."""
    from training.tracks import TRACKS_FILE

    if (folder / TRACKS_FILE).is_file():
        print(f"training set: {folder} (already exported; remove it to export again)")
        return
    start = check_footage_options(args, max_crops=256)
    if args.sites:
        footage = _sites(Path(args.sites))
    else:
        video = Path(args.source)
        footage = [(args.camera or video.stem, video, start)]
    for camera, video, when in footage:
        report = export_footage(video, folder, camera, args, when)
        print(f"{camera}: {report.summary()}")


def adapt_config(
    init: str | Path, epochs: int, seed: int, batch: tuple[int, int] | None = None
) -> Any:
    """The ``adapt`` preset on ``init``'s architecture (cutout scaled to its input size), cut
    to ``epochs``: what ``sona adapt`` and the footage demo train with."""
    import dataclasses

    from training.config import TRAIN_PRESETS
    from training.finetune import init_config

    model = init_config(init)
    preset = TRAIN_PRESETS["adapt"]
    cutout = round(preset.cutout * model.input_size[0] / preset.model.input_size[0])
    overrides: dict[str, Any] = {"epochs": epochs, "seed": seed, "cutout": cutout}
    if batch:
        overrides["ids_per_batch"], overrides["images_per_id"] = batch
    return dataclasses.replace(preset, model=model, **overrides)


def _cmd_adapt(args: argparse.Namespace) -> int:
    from model.checkpoint import checkpoint_config, read_checkpoint
    from training.adapt import adapt
    from training.track_eval import Row

    if bool(args.source) == bool(args.sites):
        raise UserError(
            "give VIDEO (a video, a folder of videos, or a training-set folder) or "
            "--sites cameras.csv"
        )
    if args.score == "all":
        raise UserError("--score all leaves nothing to adapt on: use later or earlier")
    for name in ("epochs", "recluster_every"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if args.seeds < 0:
        raise UserError("--seeds must be >= 0")
    config_of_init = checkpoint_config(read_checkpoint(args.init), args.init)
    output = Path(args.output)
    source = Path(args.source) if args.source else None
    if source is not None and (source / "tracks.json").is_file():
        folder = source  # a training set already
    elif source is not None and source.is_dir() and not any(source.iterdir()):
        raise UserError(f"{source}: an empty folder (no tracks.json, no footage)")
    else:
        folder = output / "tracks"
        _training_set(args, folder)
    _, scored, others, line = split_tracks(args, folder)
    config = adapt_config(args.init, args.epochs, args.seed, args.batch)
    print(f"adapting {args.init} on {len(others)} tracks ({args.mode}); {line}")
    result = adapt(
        args.init,
        others,
        output / "adapt",
        config,
        mode=args.mode,
        recluster_every=args.recluster_every,
        eps_quantile=args.eps_quantile,
        device=args.device,
        progress=not args.quiet,
    )
    final = output / "adapted.pt"
    result.checkpoint.replace(final)
    rows = score_methods(
        scored,
        [args.init, str(final)],
        [config_of_init],
        args.seeds,
        args.device,
        args.gap,
        mean_row=False,
    )
    before, after = rows[-2], rows[-1]
    rows[-2] = Row(f"before: {Path(args.init).name}", before.scores)
    rows[-1] = Row("after: adapted", after.scores)
    print(f"\non the held-out tracks ({line}):")
    _print_table(rows, scored, args.gap, line)
    print(
        f"change: rank-1 {100 * (after.scores[0].rank1 - before.scores[0].rank1):+.2f}, mAP "
        f"{100 * (after.scores[0].mAP - before.scores[0].mAP):+.2f} points"
    )
    serve = f"SONA_CHECKPOINT={final}"
    if not args.no_onnx:
        from training.export_check import export_and_check

        onnx = final.with_suffix(".onnx")
        export_and_check(final, onnx, log=lambda text: None)
        serve += f" SONA_ONNX_MODEL={onnx}"
    print(f"serve it: {serve} sona serve")
    return 0


def add_parsers(sub: Any) -> None:
    """Top-level commands of this group (``sona adapt``)."""
    from .args import batch_shape

    parser = sub.add_parser(
        "adapt",
        help="adapt a trained model to a site's own footage, without labels",
        description="Footage to a training set of tracks (or a training-set folder as is), "
        "split in time; fine-tune --init on one side's tracks (tracks as identities, or "
        "clusters of tracks, never merging two tracks one camera saw at once), score before "
        "and after on the other side's tracks beside raw pixels and random networks, and "
        "write OUTPUT/adapted.pt (and its ONNX export) ready to serve.",
    )
    parser.add_argument(
        "source",
        nargs="?",
        metavar="VIDEO|DIR",
        help="a video, a folder of videos or images, or a folder of sona footage "
        "export-training (used as is)",
    )
    parser.add_argument(
        "--sites", metavar="CSV", help="cameras.csv: camera,path[,start], one row a camera"
    )
    parser.add_argument("--init", required=True, metavar="CHECKPOINT", help="model to adapt")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder of the run")
    parser.add_argument("--camera", help="camera name of VIDEO (default: its file name)")
    parser.add_argument("--start", help="time of VIDEO's first frame, ISO 8601 with UTC offset")
    add_split_options(parser)
    parser.add_argument(
        "--mode",
        choices=["clusters", "tracks"],  # training.adapt.MODES (no torch import here)
        default="clusters",
        help="identities: clusters of tracks, re-clustered every --recluster-every epochs, or "
        "each track its own (default clusters)",
    )
    parser.add_argument("--epochs", type=int, default=10, help="epochs in all (default 10)")
    parser.add_argument(
        "--recluster-every", type=int, default=2, help="epochs between clusterings (default 2)"
    )
    parser.add_argument(
        "--eps-quantile",
        type=float,
        default=0.02,
        help="DBSCAN's radius: this quantile of the distances between tracks (default 0.02)",
    )
    parser.add_argument("--batch", type=batch_shape, metavar="PxK", help="default 8x4")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--seeds", type=int, default=3, help="random networks scored as a floor (default 3)"
    )
    parser.add_argument("--no-onnx", action="store_true", help="write no ONNX export")
    add_footage_options(parser)
    parser.set_defaults(handler=_cmd_adapt)
