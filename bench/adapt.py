"""Adapting to a site's own footage: how well each model finds a person again on tracks it
never saw, before and after adaptation, over seeds.

    python bench/adapt.py [VIDEO] [--tracks DIR] [--checkpoint CKPT] [--seeds 3] [--epochs 6]

VIDEO (default: Debian's vtest.avi) goes through ``sona footage export-training``'s pipeline
once (HOG, the tracker, up to 16 crops a track) into ``--tracks`` (kept; a second run reuses
it). The tracks are split at ``--split-at`` seconds; for each direction (adapt on the earlier
tracks and score the later ones, then the reverse) the table gives rank-1 and mAP with tracks
as identities and matches at least ``--gap`` seconds away (``sona eval --tracks``'s protocol)
for: raw pixels, random networks (one per seed), the checkpoint as it is, and the checkpoint
adapted (``sona adapt``'s recipe, one run per seed). CKPT defaults to the demo model of
``make serve`` (``data/demo/demo.pt``, trained first when absent). Figures go to stdout;
bench/RESULTS.md keeps a run's.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import torch

from model import load_checkpoint
from model.cpu import cpu_info
from training.adapt import adapt
from training.config import TRAIN_PRESETS
from training.finetune import init_config
from training.track_eval import (
    Row,
    network_features,
    pixel_features,
    random_network,
    score_rows,
)
from training.tracks import load_tracks, time_split

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def export(video: Path, folder: Path) -> None:
    from footage.decode import open_sources
    from footage.detect import HogDetector
    from footage.training_set import ExportSettings, export_training_set

    start = time.perf_counter()
    report = export_training_set(
        open_sources(video), HogDetector(), ExportSettings(camera=video.stem), folder
    )
    print(f"exported {video.name}: {report.summary()} in {time.perf_counter() - start:.0f} s")


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def direction(args, tracks, checkpoint: Path, name: str, train, scored, out: Path) -> list[Row]:
    device = torch.device("cpu")
    methods = [("raw pixels", [pixel_features(scored)])]
    config = init_config(checkpoint)
    nets = [random_network(config, s) for s in range(args.seeds)]
    methods.append(("random network", [network_features(n, scored, device) for n in nets]))
    net, _ = load_checkpoint(checkpoint)
    methods.append((f"{checkpoint.name} as it is", [network_features(net, scored, device)]))
    preset = TRAIN_PRESETS["adapt"]
    cutout = round(preset.cutout * config.input_size[0] / preset.model.input_size[0])
    adapted = []
    for seed in range(args.seeds):
        cfg = dataclasses.replace(
            preset, model=config, epochs=args.epochs, seed=seed, cutout=cutout
        )
        wall, cpu = time.perf_counter(), cpu_seconds()
        result = adapt(
            checkpoint,
            train,
            out / name / f"seed{seed}",
            cfg,
            mode=args.mode,
            recluster_every=args.recluster_every,
            device="cpu",
            log=lambda line, seed=seed: print(f"  {name} seed {seed}: {line}", flush=True),
        )
        print(
            f"  {name} seed {seed}: adapted in {time.perf_counter() - wall:.0f} s wall, "
            f"{cpu_seconds() - cpu:.0f} s CPU",
            flush=True,
        )
        net, _ = load_checkpoint(result.checkpoint)
        adapted.append(network_features(net, scored, device))
    methods.append((f"{checkpoint.name} adapted ({args.mode})", adapted))
    return score_rows(methods, scored, args.gap)


def markdown(rows: list[Row]) -> str:
    def cell(row: Row, field: str) -> str:
        mean, std = row.stat(field)
        return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")

    lines = ["| method | runs | rank-1 | mAP |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row.name} | {len(row.scores)} | {cell(row, 'rank1')} | {cell(row, 'mAP')} |"
        )
    chance = rows[0].scores[0]
    lines.append(f"| chance | | {chance.chance:.3f} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", nargs="?", type=Path, default=VTEST, help="default vtest.avi")
    parser.add_argument(
        "--tracks", type=Path, default=Path("data/adapt-bench/vtest-tracks"),
        help="training-set folder: reused when it holds tracks.json, else exported into",
    )  # fmt: skip
    parser.add_argument("--checkpoint", type=Path, help="default: the demo model")
    parser.add_argument("--out", type=Path, default=Path("data/adapt-bench/runs"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--recluster-every", type=int, default=2)
    parser.add_argument("--mode", choices=["clusters", "tracks"], default="clusters")
    parser.add_argument("--split-at", type=float, default=40.0)
    parser.add_argument("--gap", type=float, default=5.0)
    args = parser.parse_args()

    if not (args.tracks / "tracks.json").is_file():
        export(args.video, args.tracks)
    checkpoint = args.checkpoint
    if checkpoint is None:
        from training.demo import build_demo

        checkpoint = build_demo(Path("data/demo"), progress=False).checkpoint
    tracks = load_tracks(args.tracks)
    earlier, later, across = time_split(tracks, args.split_at)
    print(f"{cpu_info().describe()}; torch threads {torch.get_num_threads()}")
    print(
        f"{args.tracks}: {len(tracks.tracks)} tracks, {sum(len(t.crops) for t in tracks.tracks)} "
        f"crops; split at {args.split_at:g} s: {len(earlier)} before, {len(later)} after, "
        f"{across} across (left out); gap {args.gap:g} s; {args.epochs} epochs, "
        f"re-clustered every {args.recluster_every}; {args.seeds} seeds"
    )
    for name, train, scored in (
        ("first-to-last", earlier, later),
        ("last-to-first", later, earlier),
    ):
        rows = direction(args, tracks, checkpoint, name, train, scored, args.out)
        queries = rows[0].scores[0].queries
        crops = sum(len(t.crops) for t in scored)
        print(
            f"\nadapted on {len(train)} tracks, scored on {len(scored)} tracks ({crops} crops, "
            f"{queries} queries): {name}\n"
        )
        print(markdown(rows), flush=True)


if __name__ == "__main__":
    main()
