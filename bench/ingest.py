"""Footage to gallery: how fast each step runs, how many crops a track gets, and how well a
crop finds its own track again after a gap.

    python bench/ingest.py [VIDEO] [--checkpoint CKPT] [--duration S] [--picture PNG]

VIDEO defaults to vtest.avi from Debian's opencv-doc (a surveillance camera, 795 frames at
10 fps, 768x576), or, where that is absent, a clip of made-up walkers written here. Frames/s of
decode, detect (HOG), track (+ crop choice), embed and index are each timed alone, in this
process, on the same frames and crops; "together" is the sum of those steps per frame (no HTTP:
``sona footage add`` adds one request per track). Rank-1: tracks serve as pseudo-identities; a
query crop (or a whole track's mean, the multi-shot query) must find a crop of its own track
taken at least ``--gap`` seconds away among every crop of the other tracks, for the model, for
raw pixels, and by chance. A person cut into two tracks counts against every method alike.

CKPT defaults to the demo model of ``make serve`` (``data/demo/demo.pt``, trained first when
absent, a few minutes); ``random`` is the tiny preset randomly initialised. Figures go to
stdout; bench/RESULTS.md keeps a run's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import torch

from footage.choose import Candidate, CropChooser
from footage.decode import VideoFile
from footage.detect import HogDetector
from footage.track import Tracker
from model.cpu import cpu_info
from model.loading import open_encoder
from model.preprocess import resize
from service.store import FaissSqliteStore, NewItem

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


@dataclass
class Timings:
    decode: float = 0.0
    detect: float = 0.0
    track: float = 0.0
    embed: float = 0.0
    index: float = 0.0


@dataclass
class Run:
    frames: int = 0
    fps: float = 10.0
    tracks: dict[int, list[Candidate]] = field(default_factory=dict)  # eval crops
    indexed: dict[int, list[Candidate]] = field(default_factory=dict)  # default crops
    shown: dict[int, np.ndarray] = field(default_factory=dict)  # some frames, for the picture
    boxes: dict[int, list[tuple[int, tuple[float, float, float, float]]]] = field(
        default_factory=dict
    )  # frame -> (track key, box)
    numbers: dict[int, int] = field(default_factory=dict)  # track key -> number


def made_up_clip(folder: Path, frames: int = 200) -> Path:
    """Four textured walkers crossing a textured scene, at 10 fps (no people data needed)."""
    path = folder / "walkers.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 360))
    rng = np.random.default_rng(0)
    background = cv2.resize(rng.integers(60, 160, (36, 64, 3), dtype=np.uint8), (640, 360))
    walkers = [
        cv2.resize(rng.integers(0, 256, (12, 4, 3), dtype=np.uint8), (48, 140), cv2.INTER_NEAREST)
        for _ in range(4)
    ]
    for i in range(frames):
        image = background.copy()
        for n, person in enumerate(walkers):
            x = int((40 + (i * (3 + n)) + 150 * n) % 600)
            y = 30 + 50 * n % 200
            image[y : y + 140, x : x + 48] = person[:, : min(48, 640 - x)]
        writer.write(image)
    writer.release()
    return path


def pipeline(
    video: Path, duration: float | None, crops: int, eval_crops: int
) -> tuple[Run, Timings]:
    source = VideoFile(video, max_seconds=duration)
    detector = HogDetector()
    tracker = Tracker(max_age=round(source.fps), high_score=detector.high_score)
    choosers: dict[int, CropChooser] = {}
    run, t = Run(fps=source.fps), Timings()

    def finish(track) -> None:
        chooser = choosers.pop(track.key, None)
        if chooser is None or track.still(0.5, run.fps):  # as sona footage add does
            return
        run.numbers[track.key] = track.number
        chosen = chooser.choose(eval_crops)
        if chosen:
            run.tracks[track.number] = chosen
            run.indexed[track.number] = chooser.choose(crops)

    frames = iter(source)
    while True:
        start = time.perf_counter()
        frame = next(frames, None)
        t.decode += time.perf_counter() - start
        if frame is None:
            break
        start = time.perf_counter()
        detections = detector.detect(frame.index, frame.image)
        t.detect += time.perf_counter() - start
        start = time.perf_counter()
        pairs, ended = tracker.update(frame.index, detections)
        for track, det in pairs:
            choosers.setdefault(track.key, CropChooser()).add(
                frame.index, frame.seconds, frame.image, det
            )
        for track in ended:
            finish(track)
        live = {tr.key for tr in tracker.live}
        for key in [k for k in choosers if k not in live]:
            del choosers[key]
        t.track += time.perf_counter() - start
        run.boxes[frame.index] = [(tr.key, det.corners) for tr, det in pairs]
        if frame.index % 10 == 0:
            run.shown[frame.index] = frame.image
        run.frames += 1
    for track in tracker.finish():
        finish(track)
    return run, t


def to_batch(cands: list[Candidate], size: tuple[int, int]) -> torch.Tensor:
    tensors = [torch.from_numpy(c.crop[:, :, ::-1].copy()).permute(2, 0, 1) for c in cands]
    return torch.stack([resize(x, size) for x in tensors])


def pixels(cands: list[Candidate]) -> np.ndarray:
    """The raw-pixel baseline: each crop at 64x32 RGB, centred, unit length."""
    x = to_batch(cands, (64, 32)).float().reshape(len(cands), -1).numpy()
    x -= x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)


def rank1(vectors: np.ndarray, track: np.ndarray, seconds: np.ndarray, gap: float) -> tuple:
    """Single-crop queries: (rank-1, chance, queries) over crops with an own-track crop
    ``gap`` seconds away; the gallery leaves out the query's own track within the gap."""
    sims = vectors @ vectors.T
    hits, chance = [], []
    for q in range(len(vectors)):
        near = (track == track[q]) & (np.abs(seconds - seconds[q]) < gap)
        allowed = ~near
        own = allowed & (track == track[q])
        if not own.any():
            continue
        best = np.flatnonzero(allowed)[np.argmax(sims[q, allowed])]
        hits.append(track[best] == track[q])
        chance.append(own.sum() / allowed.sum())
    return float(np.mean(hits)), float(np.mean(chance)), len(hits)


def track_rank1(vectors: np.ndarray, track: np.ndarray, seconds: np.ndarray, gap: float):
    """Multi-shot: the first third of a track (its mean vector, normalised, or each of its
    crops alone) must find the track's crops ``gap`` seconds after it, among all others."""
    mean_hits, single_hits, chance = [], [], []
    for t in np.unique(track):
        mine = np.flatnonzero(track == t)
        t0, t1 = seconds[mine].min(), seconds[mine].max()
        query = mine[seconds[mine] <= t0 + (t1 - t0) / 3]
        later = mine[seconds[mine] >= seconds[query].max() + gap]
        if len(later) == 0:
            continue
        gallery = np.concatenate([later, np.flatnonzero(track != t)])
        q = vectors[query].mean(axis=0)
        q /= np.linalg.norm(q)
        mean_hits.append(track[gallery[np.argmax(vectors[gallery] @ q)]] == t)
        single_hits.extend(
            track[gallery[np.argmax(vectors[gallery] @ vectors[i])]] == t for i in query
        )
        chance.append(len(later) / len(gallery))
    if not mean_hits:
        return float("nan"), float("nan"), float("nan"), 0
    return (
        float(np.mean(mean_hits)),
        float(np.mean(single_hits)),
        float(np.mean(chance)),
        len(mean_hits),
    )


def picture(run: Run, path: Path) -> None:
    """A frame with its tracked people boxed and numbered; the longest track's crops."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    longest = max(run.tracks, key=lambda n: run.tracks[n][-1].seconds - run.tracks[n][0].seconds)

    def shown_tracks(i: int) -> tuple[bool, int]:  # the longest track in it, then the most
        numbers = [run.numbers.get(k) for k, _ in run.boxes.get(i, [])]
        return longest in numbers, sum(n in run.tracks for n in numbers)

    index = max(run.shown, key=shown_tracks)
    crops = run.tracks[longest]
    fig = plt.figure(figsize=(11, 6.2), dpi=90)
    grid = fig.add_gridspec(1, 2, width_ratios=[3.2, 2.2], wspace=0.04)
    ax = fig.add_subplot(grid[0])
    ax.imshow(run.shown[index][:, :, ::-1])
    for key, (x1, y1, x2, y2) in run.boxes[index]:
        number = run.numbers.get(key)
        if number not in run.tracks:
            continue
        colour = "lime" if number == longest else "yellow"
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=2, ec=colour))
        ax.text(x1, y1 - 4, f"track {number}", color=colour, fontsize=9, weight="bold")
    ax.set_title(f"frame {index} ({index / run.fps:.1f} s): people found (HOG) and tracked")
    ax.axis("off")
    sub = grid[1].subgridspec(2, (len(crops) + 1) // 2, hspace=0.25, wspace=0.08)
    for n, c in enumerate(crops):
        cax = fig.add_subplot(sub[n // ((len(crops) + 1) // 2), n % ((len(crops) + 1) // 2)])
        cax.imshow(cv2.resize(c.crop, (64, 160))[:, :, ::-1])
        cax.set_title(f"{c.seconds:.1f} s", fontsize=9)
        cax.axis("off")
    fig.text(0.79, 0.93, f"track {longest}: the crops chosen, over time", ha="center")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", nargs="?", help="video file (default: vtest.avi, or made up)")
    parser.add_argument(
        "--checkpoint",
        help="model: a file, 'random' (the tiny preset, randomly initialised), or by default the "
        "demo model of make serve (data/demo/demo.pt, trained first when absent)",
    )
    parser.add_argument("--duration", type=float, help="only the first SECONDS")
    parser.add_argument("--crops-per-track", type=int, default=4, help="indexed per track (4)")
    parser.add_argument("--eval-crops", type=int, default=8, help="crops per track for rank-1")
    parser.add_argument("--gap", type=float, default=5.0, help="seconds between query and match")
    parser.add_argument("--picture", help="write the footage page's picture here (PNG)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    with tempfile.TemporaryDirectory() as tmp:
        if args.video:
            video = Path(args.video)
        elif VTEST.is_file():
            video = VTEST
        else:
            video = made_up_clip(Path(tmp))
            print("vtest.avi absent (apt-get install opencv-doc): a made-up clip of 4 walkers")
        if args.checkpoint == "random":
            import dataclasses

            from model import PRESETS, SONANet, save_checkpoint

            torch.manual_seed(0)
            net = SONANet(dataclasses.replace(PRESETS["tiny"], num_classes=0)).eval()
            checkpoint = save_checkpoint(Path(tmp) / "random-tiny.pt", net)
        elif args.checkpoint:
            checkpoint = Path(args.checkpoint)
        else:
            from training.demo import build_demo

            checkpoint = build_demo(Path("data/demo"), progress=False).checkpoint
        loaded = open_encoder(checkpoint, device="cpu")
        encoder = loaded.encoder

        run, t = pipeline(video, args.duration, args.crops_per_track, args.eval_crops)
        indexed = [c for n in sorted(run.indexed) for c in run.indexed[n]]
        everything = [c for n in sorted(run.tracks) for c in run.tracks[n]]
        track = np.array([n for n in sorted(run.tracks) for _ in run.tracks[n]])
        seconds = np.array([c.seconds for c in everything])

        start = time.perf_counter()
        batch = to_batch(indexed, tuple(encoder.input_size))
        model_indexed = np.concatenate(
            [encoder(batch[i : i + 32]) for i in range(0, len(batch), 32)]
        )
        t.embed = time.perf_counter() - start
        batch = to_batch(everything, tuple(encoder.input_size))
        model_all = np.concatenate([encoder(batch[i : i + 32]) for i in range(0, len(batch), 32)])

        when = datetime(2024, 5, 1, tzinfo=UTC)
        items = [
            NewItem(
                embedding=v,
                camera_id="c1",
                timestamp=when + timedelta(seconds=c.seconds),
                image=cv2.imencode(".jpg", c.crop)[1].tobytes(),
                image_type="image/jpeg",
                track_id=f"t{n}",
            )
            for (n, c), v in zip(
                [(n, c) for n in sorted(run.indexed) for c in run.indexed[n]],
                model_indexed,
                strict=True,
            )
        ]
        with FaissSqliteStore(Path(tmp) / "store", dim=encoder.dim) as store:
            start = time.perf_counter()
            for n in range(0, len(items), 4):  # one track's worth per write, as the CLI sends
                store.add("bench", items[n : n + 4])
            t.index = time.perf_counter() - start

        pixel_all = pixels(everything)
        if args.picture:
            picture(run, Path(args.picture))

    per_track = [len(v) for v in run.indexed.values()]
    print(f"video: {video.name}, {run.frames} frames at {run.fps:g} fps; model {checkpoint.name}")
    print(
        f"{cpu_info().describe()}; torch threads {torch.get_num_threads()}, "
        f"OpenCV threads {cv2.getNumThreads()}"
    )
    print("\n| step | time (s) | frames/s | per |\n|---|---|---|---|")
    for name in ("decode", "detect", "track", "embed", "index"):
        spent = getattr(t, name)
        unit = f"{len(indexed)} crops" if name in ("embed", "index") else f"{run.frames} frames"
        print(f"| {name} | {spent:.2f} | {run.frames / spent:.1f} | {unit} |")
    together = t.decode + t.detect + t.track + t.embed + t.index
    print(f"| together | {together:.2f} | {run.frames / together:.1f} | {run.frames} frames |")
    print(
        f"\ntracks with crops: {len(run.indexed)}; crops indexed: {len(indexed)}; per track "
        f"min {min(per_track)} / median {np.median(per_track):g} / max {max(per_track)} "
        f"(--crops-per-track {args.crops_per_track})"
    )
    print(
        f"\nrank-1 after a gap of >= {args.gap:g} s ({len(everything)} crops, up to "
        f"{args.eval_crops} per track, {len(run.tracks)} tracks)\n"
    )
    print("| query | model | raw pixels | chance | queries |\n|---|---|---|---|---|")
    m1, chance, nq = rank1(model_all, track, seconds, args.gap)
    p1, _, _ = rank1(pixel_all, track, seconds, args.gap)
    print(f"| one crop | {m1:.3f} | {p1:.3f} | {chance:.3f} | {nq} |")
    mm, ms, chance_t, nt = track_rank1(model_all, track, seconds, args.gap)
    pm, ps, _, _ = track_rank1(pixel_all, track, seconds, args.gap)
    for label, a, b in (("each crop", ms, ps), ("mean (one query)", mm, pm)):
        print(f"| first third of a track, {label} | {a:.3f} | {b:.3f} | {chance_t:.3f} | {nt} |")


if __name__ == "__main__":
    main()
