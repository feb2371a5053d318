"""The synthetic Market-1501-style dataset: layout, protocol, determinism, safety, difficulty."""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli.main import build_parser, main
from training.datasets.base import DatasetError
from training.synthetic import (
    METADATA_FILE,
    SPLITS,
    SyntheticSummary,
    is_complete,
    make_dataset,
    read_metadata,
)

# Market-1501 names: identity, camera, sequence, frame, box index.
NAME = re.compile(r"^(\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")

IDENTITIES, CAMERAS, PER_CAMERA = 60, 4, 3


def _records(folder: Path) -> list[tuple[Path, int, int]]:
    out = []
    for path in sorted(folder.iterdir()):
        m = NAME.match(path.name)
        assert m, f"not a Market-1501 name: {path.name}"
        assert m[3] == "1"
        out.append((path, int(m[1]), int(m[2])))
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[SyntheticSummary, dict[str, list[tuple[Path, int, int]]]]:
    root = tmp_path_factory.mktemp("synth") / "market"
    summary = make_dataset(root, IDENTITIES, CAMERAS, images_per_camera=PER_CAMERA, seed=0)
    return summary, {split: _records(root / split) for split in SPLITS}


def test_layout_and_names(dataset) -> None:
    summary, splits = dataset
    assert sorted(p.name for p in summary.root.iterdir()) == sorted([*SPLITS, METADATA_FILE])
    for records in splits.values():
        assert records
        assert all(1 <= cam <= CAMERAS for _, _, cam in records)
    names = [p.name for records in splits.values() for p, _, _ in records]
    assert len(names) == len(set(names))


def test_identity_split_and_query_protocol(dataset) -> None:
    _, splits = dataset
    train = {pid for _, pid, _ in splits["bounding_box_train"]}
    query = {pid for _, pid, _ in splits["query"]}
    gallery = {pid for _, pid, _ in splits["bounding_box_test"]}
    n_train = IDENTITIES // 2
    assert train == set(range(1, n_train + 1))
    assert query == set(range(n_train + 1, IDENTITIES + 1))
    assert not train & query
    assert gallery - {0} == query  # the gallery holds the test identities and distractors

    cams_of: dict[int, set[int]] = defaultdict(set)
    for split in SPLITS:
        for _, pid, cam in splits[split]:
            if pid:
                cams_of[pid].add(cam)
    assert all(len(cams) >= 2 for cams in cams_of.values())

    # One query per (identity, camera) it appears in; the rest of that camera in the gallery.
    query_keys = [(pid, cam) for _, pid, cam in splits["query"]]
    assert len(query_keys) == len(set(query_keys))
    assert set(query_keys) == {(pid, cam) for pid in query for cam in cams_of[pid]}
    in_gallery: dict[tuple[int, int], int] = defaultdict(int)
    for _, pid, cam in splits["bounding_box_test"]:
        in_gallery[pid, cam] += 1
    for pid, cam in query_keys:
        assert in_gallery[pid, cam] == PER_CAMERA - 1
        assert any(in_gallery[pid, other] for other in cams_of[pid] - {cam}), (pid, cam)


def test_distractors_only_in_gallery(dataset) -> None:
    summary, splits = dataset
    assert all(pid != 0 for split in ("bounding_box_train", "query") for _, pid, _ in splits[split])
    distractors = [r for r in splits["bounding_box_test"] if r[1] == 0]
    assert len(distractors) == summary.counts["distractor_images"] > 0


def test_counts_match_summary_and_json(dataset) -> None:
    summary, splits = dataset
    c = summary.counts
    assert c["train_images"] == len(splits["bounding_box_train"])
    assert c["query_images"] == len(splits["query"])
    assert c["gallery_images"] == len(splits["bounding_box_test"])
    assert c["train_identities"] == len({pid for _, pid, _ in splits["bounding_box_train"]})
    assert c["query_identities"] == len({pid for _, pid, _ in splits["query"]})
    assert c["gallery_identities"] == len({pid for _, pid, _ in splits["bounding_box_test"]} - {0})
    assert c["distractor_identities"] == IDENTITIES // 5
    assert summary.elapsed_s > 0

    meta = json.loads((summary.root / METADATA_FILE).read_text())
    assert meta == read_metadata(summary.root)
    assert meta["format"] == "market1501"
    assert meta["seed"] == 0
    assert meta["counts"] == c
    assert meta["parameters"]["identities"] == IDENTITIES
    assert meta["parameters"]["cameras"] == CAMERAS
    assert meta["parameters"]["image_size"] == [128, 64]


def test_images_decode_rgb_at_size(dataset) -> None:
    _, splits = dataset
    for records in splits.values():
        for path, _, _ in records:
            with Image.open(path) as im:
                assert im.format == "JPEG"
                assert im.mode == "RGB"
                assert im.size == (64, 128)  # width, height
                im.load()


def _files(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    kwargs = {"images_per_camera": 2, "image_size": (96, 48)}
    make_dataset(tmp_path / "a", 8, 3, seed=7, **kwargs)
    make_dataset(tmp_path / "b", 8, 3, seed=7, **kwargs)
    make_dataset(tmp_path / "c", 8, 3, seed=8, **kwargs)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert a != c
    # Not just other names: the pictures of the first training identity differ too.
    first = sorted(n for n in a if "/0001_" in n)
    assert [a[n] for n in first] != [c[n] for n in sorted(n for n in c if "/0001_" in n)]
    with Image.open(tmp_path / "a" / first[0]) as im:
        assert im.size == (48, 96)


def test_refuses_non_empty_folder_and_overwrites_on_request(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        make_dataset(root, 4, 2, images_per_camera=2)
    assert sorted(p.name for p in root.iterdir()) == ["notes.txt"]  # nothing written

    first = make_dataset(root, 4, 2, images_per_camera=2, overwrite=True)
    stale = root / "query" / "9999_c1s1_000001_01.jpg"
    stale.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="a synthetic dataset"):
        make_dataset(root, 4, 2, images_per_camera=2)
    second = make_dataset(root, 6, 2, images_per_camera=2, overwrite=True)
    assert not stale.exists()
    assert (root / "notes.txt").read_text() == "keep me"
    assert second.counts["train_identities"] == 3 != first.counts["train_identities"]
    assert read_metadata(root)["parameters"]["identities"] == 6


def test_interrupted_run_reads_as_incomplete(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_dataset(root, 4, 2, images_per_camera=2)
    assert is_complete(root)
    (root / METADATA_FILE).unlink()  # as if killed before the metadata was written
    assert not is_complete(root)
    with pytest.raises(DatasetError, match="interrupted"):
        read_metadata(root)
    with pytest.raises(FileExistsError, match="incomplete"):
        make_dataset(root, 4, 2, images_per_camera=2)
    make_dataset(root, 4, 2, images_per_camera=2, overwrite=True)
    assert is_complete(root)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cameras": 1},
        {"cameras": 10},
        {"images_per_camera": 1},
        {"identities": 1},
        {"train_fraction": 1.0},
        {"distractors": -1},
        {"image_size": (8, 4)},
    ],
)
def test_rejects_bad_parameters(tmp_path: Path, kwargs) -> None:
    args = {"identities": 4, "cameras": 2, "images_per_camera": 2} | kwargs
    with pytest.raises(ValueError):  # noqa: PT011 - the messages differ per parameter
        make_dataset(tmp_path / "x", **args)
    assert not (tmp_path / "x" / METADATA_FILE).exists()


def _parser() -> argparse.ArgumentParser:
    return build_parser()


def test_cli_synth(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    argv = [
        "synth",
        str(out),
        "--identities",
        "6",
        "--cameras",
        "3",
        "--images-per-camera",
        "2",
        "--distractors",
        "1",
        "--size",
        "64x32",
        "--seed",
        "3",
    ]
    args = _parser().parse_args(argv)
    assert args.handler(args) == 0
    assert "train" in capsys.readouterr().out
    meta = read_metadata(out)
    assert meta["seed"] == 3
    assert meta["parameters"] | {"train_fraction": 0, "quality": 0} == {
        "identities": 6,
        "cameras": 3,
        "images_per_camera": 2,
        "distractors": 1,
        "image_size": [64, 32],
        "train_fraction": 0,
        "quality": 0,
    }

    capsys.readouterr()
    assert main(argv) == 2  # again, without --overwrite: refused in one line, exit code 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    args = _parser().parse_args([*argv, "--overwrite"])
    assert args.handler(args) == 0

    with pytest.raises(SystemExit):
        _parser().parse_args(["synth", str(out), "--size", "big"])


def test_cli_every_option_has_help() -> None:
    parser = _parser()
    synth = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = synth.choices["synth"]
    for action in sub._actions:
        assert action.help, action.dest
    text = sub.format_help()
    for option in (
        "OUTPUT",
        "--identities",
        "--cameras",
        "--images-per-camera",
        "--distractors",
        "--size",
        "--seed",
        "--overwrite",
    ):
        assert option in text


def _thumbnails(records: list[tuple[Path, int, int]]) -> np.ndarray:
    rows = []
    for path, _, _ in records:
        with Image.open(path) as im:
            rows.append(np.asarray(im.resize((8, 16), Image.BILINEAR), np.float32).ravel())
    x = np.stack(rows)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_raw_pixels_are_not_enough(dataset) -> None:
    """Nearest neighbour on 16x8 thumbnails: far above chance, far below solved."""
    _, splits = dataset
    query, gallery = splits["query"], splits["bounding_box_test"]
    sim = _thumbnails(query) @ _thumbnails(gallery).T
    g_pid = np.array([pid for _, pid, _ in gallery])
    g_cam = np.array([cam for _, _, cam in gallery])
    hits, chance = [], []
    for i, (_, pid, cam) in enumerate(query):
        valid = ~((g_pid == pid) & (g_cam == cam))  # Market: same identity, same camera ignored
        match = (g_pid == pid) & valid
        hits.append(bool(match[np.argmax(np.where(valid, sim[i], -np.inf))]))
        chance.append(match.sum() / valid.sum())
    rank1, chance_rank1 = float(np.mean(hits)), float(np.mean(chance))
    # Measured for this seed and size: rank-1 0.25 against chance 0.019 (13x chance); over
    # seeds 0 to 4, 5.3x to 14.6x chance and rank-1 0.11 to 0.30 (bench/test_spread.py).
    assert rank1 > 3 * chance_rank1, (rank1, chance_rank1)
    assert rank1 < 0.6, rank1
