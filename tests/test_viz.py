"""Figures: SONA attention (paper figure 3), rank lists and training curves, as real PNG files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli.main import build_parser, main
from model import PRESETS, SONANet, save_checkpoint
from training import viz
from training.datasets import load_dataset

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def tiny_net() -> SONANet:
    torch.manual_seed(0)
    config = dataclasses.replace(PRESETS["tiny"], num_classes=0)
    return SONANet(config, load_backbone_weights=False).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tiny_net: SONANet) -> dict[str, Path]:
    from training.synthetic import make_dataset

    root = tmp_path_factory.mktemp("viz")
    data = root / "data"
    make_dataset(data, identities=12, cameras=3, images_per_camera=3, seed=1)
    plain = SONANet(
        dataclasses.replace(PRESETS["tiny"], num_classes=0, sona_stages=()),
        load_backbone_weights=False,
    )
    rows = [
        {
            "epoch": e,
            "loss": 10 / e,
            "triplet": 6 / e,
            "cross_entropy": 4 / e,
            "lr": 1e-3 * e,
            "images_per_s": 100.0,
            "seconds": 1.0,
        }
        for e in range(1, 6)
    ]
    rows[2] |= {"rank1": 0.3, "rank5": 0.5, "rank10": 0.6, "mAP": 0.2, "mINP": 0.1}
    rows[4] |= {"rank1": 0.5, "rank5": 0.7, "rank10": 0.8, "mAP": 0.4, "mINP": 0.2}
    with_eval = root / "run" / "metrics.jsonl"
    with_eval.parent.mkdir()
    with_eval.write_text("".join(json.dumps(r) + "\n" for r in rows))
    no_eval = root / "no_eval.jsonl"
    no_eval.write_text(
        "".join(
            json.dumps({k: v for k, v in r.items() if k in ("epoch", "loss", "lr")}) + "\n"
            for r in rows[:3]
        )
    )
    return {
        "checkpoint": save_checkpoint(root / "tiny.pt", tiny_net),
        "plain": save_checkpoint(root / "plain.pt", plain),
        "data": data,
        "image": sorted((data / "query").glob("*.jpg"))[0],
        "run": with_eval.parent,
        "no_eval": no_eval,
        "out": root / "out",
    }


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


# -- attention --------------------------------------------------------------------------------


def test_attention_map_is_the_sona_blocks_own(tiny_net: SONANet, files: dict[str, Path]) -> None:
    amap = viz.attention_map(tiny_net, files["image"])
    h, w = amap.grid
    assert amap.stage == 2
    assert (h, w) == (8, 4)  # 64 x 32 input, stride 8 after stage 2
    assert amap.attention.shape == (h * w, h * w)
    torch.testing.assert_close(amap.attention.sum(1), torch.ones(h * w))
    # The same map, computed by running the stages by hand.
    from model.preprocess import normalize

    with torch.inference_mode():
        x = normalize(amap.crop.unsqueeze(0))
        x = tiny_net.layer2(tiny_net.layer1(tiny_net.stem(x)))
        torch.testing.assert_close(amap.attention, tiny_net.sona2.attention(x)[0])


def test_red_points_are_the_largest_weights_of_the_row(
    tiny_net: SONANet, files: dict[str, Path]
) -> None:
    amap = viz.attention_map(tiny_net, files["image"])
    h, w = amap.grid
    for index in (0, 5, h * w - 1):
        row = amap.attention[index]
        chosen = viz.top_related(row, w, 6)
        flat = [r * w + c for r, c in chosen]
        assert flat[0] == int(row.argmax())
        assert len(set(flat)) == 6
        others = np.delete(row.numpy(), flat)
        assert row[flat].min() >= others.max()
        assert list(row[flat]) == sorted(row[flat].tolist(), reverse=True)
    # A hand-made 2 x 3 row: positions are (row, col), best first, ties by index.
    row = torch.tensor([0.1, 0.4, 0.0, 0.2, 0.2, 0.1])
    assert viz.top_related(row, 3, 3) == [(0, 1), (1, 0), (1, 1)]
    assert len(viz.top_related(row, 3, 99)) == 6


def test_reference_points() -> None:
    points = dict(viz.default_reference_points((48, 16)))
    assert set(points) == {"head", "torso", "legs", "background"}
    assert points["background"] == (0, 0)
    assert points["head"][0] < points["torso"][0] < points["legs"][0] < 48
    assert all(0 <= c < 16 for _, c in points.values())
    cells = viz._pixel_points_to_cells([(0, 0), (127, 63), (64, 32)], (128, 64), (16, 8))
    assert [c for _, c in cells] == [(0, 0), (15, 7), (8, 4)]
    with pytest.raises(ValueError, match="outside the image"):
        viz._pixel_points_to_cells([(128, 0)], (128, 64), (16, 8))


def test_attention_figure_writes_a_png(tiny_net: SONANet, files: dict[str, Path]) -> None:
    out = viz.attention_figure(tiny_net, files["image"], files["out"] / "attention.png", top=5)
    width, height = png_size(out)
    assert 500 < width < 2000 and 300 < height < 1000
    two = viz.attention_figure(
        tiny_net, files["image"], files["out"] / "two.png", points=[(10, 10), (100, 40)]
    )
    assert png_size(two)[0] < width  # two reference panels instead of four


def test_attention_without_sona_is_a_clear_error(tiny_net: SONANet, files: dict[str, Path]) -> None:
    from model import load_checkpoint

    plain, _ = load_checkpoint(files["plain"])
    with pytest.raises(ValueError, match="no SONA block"):
        viz.attention_figure(plain, files["image"], files["out"] / "none.png")
    with pytest.raises(ValueError, match="no SONA block after stage 3"):
        viz.attention_map(tiny_net, files["image"], stage=3)


# -- rank lists -------------------------------------------------------------------------------


def test_ranked_gallery_follows_the_market_protocol() -> None:
    # Query: identity 1 from camera 0.
    distances = [0.10, 0.20, 0.30, 0.05, 0.30, 0.90, 0.01]
    g_pids = [1, 2, 1, 3, 1, 2, 1]
    g_cams = [0, 1, 1, 0, 2, 0, 0]
    indices, correct = viz.ranked_gallery(distances, 1, 0, g_pids, g_cams, top=4)
    # 6 and 0 (same identity, same camera) are junk and skipped, however close; the tie at 0.30
    # keeps gallery order; the other person from the query's own camera (3) is a plain miss.
    assert indices.tolist() == [3, 1, 2, 4]
    assert correct.tolist() == [False, False, True, True]
    indices, correct = viz.ranked_gallery(distances, 1, 0, g_pids, g_cams, top=10)
    assert indices.tolist() == [3, 1, 2, 4, 5] and correct.tolist()[-1] is False


def test_queries_mix_hits_and_misses() -> None:
    first = np.array([True, True, True, False, False, True, False, True])
    valid = np.array([True, True, True, True, True, True, True, False])
    chosen = viz._choose_queries(first, valid, 4, seed=0)
    assert len(chosen) == 4 and 7 not in chosen
    assert sum(first[chosen]) == 2
    assert chosen == viz._choose_queries(first, valid, 4, seed=0)
    everything = viz._choose_queries(first, valid, 20, seed=3)
    assert sorted(everything) == list(range(7))


def test_rank_figure_writes_a_png(files: dict[str, Path]) -> None:
    images = sorted((files["data"] / "bounding_box_test").glob("*.jpg"))
    out = viz.rank_figure(
        images[:2],
        images,
        [[2, 3, 4], [5]],
        [[True, False, True], [False]],
        files["out"] / "rank.png",
        top=3,
    )
    width, height = png_size(out)
    assert 300 < width < 800 and 300 < height < 800
    with pytest.raises(ValueError, match="rank lists"):
        viz.rank_figure(images[:2], images, [[1]], [[True]], files["out"] / "bad.png")


def test_rank_list_figure_on_a_dataset(tiny_net: SONANet, files: dict[str, Path]) -> None:
    data = load_dataset("synthetic", files["data"])
    out = viz.rank_list_figure(
        tiny_net, data, files["out"] / "ranks.png", queries=3, top=4, workers=0
    )
    width, height = png_size(out)
    assert 400 < width < 1000 and 500 < height < 1200


# -- curves -----------------------------------------------------------------------------------


def test_curves_with_and_without_evaluation(files: dict[str, Path]) -> None:
    full = viz.plot_training_curves(files["run"], files["out"] / "curves.png")  # a run folder
    bare = viz.plot_training_curves(files["no_eval"], files["out"] / "bare.png")
    full_w, full_h = png_size(full)
    bare_w, bare_h = png_size(bare)
    assert full_w > bare_w > 500 and full_h == bare_h  # three panels vs two


def test_curves_keep_the_last_row_of_a_repeated_epoch(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [
        {"epoch": 1, "loss": 3.0, "lr": 1e-3},
        {"epoch": 2, "loss": 9.0, "lr": 1e-3},
        {"epoch": 2, "loss": 2.0, "lr": 1e-3},
    ]
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n\n")
    assert [r["loss"] for r in viz._read_metrics(path)] == [3.0, 2.0]
    path.write_text("")
    with pytest.raises(ValueError, match="no epochs"):
        viz.plot_training_curves(path, tmp_path / "x.png")
    path.write_text("not json\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:1"):
        viz.plot_training_curves(path, tmp_path / "x.png")
    with pytest.raises(FileNotFoundError):
        viz.plot_training_curves(tmp_path / "missing", tmp_path / "x.png")


# -- command line -----------------------------------------------------------------------------


def test_every_option_has_help() -> None:
    parser = build_parser()
    viz_parser = parser._subparsers._group_actions[0].choices["viz"]
    kinds = viz_parser._subparsers._group_actions[0].choices
    assert set(kinds) == {"attention", "ranks", "curves"}
    for kind in kinds.values():
        for action in kind._actions:
            assert action.help, f"{kind.prog} {action.dest} has no help"


def test_cli_commands_write_pngs(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = files["out"]
    common = ["--device", "cpu"]
    attention = ["viz", "attention", str(files["checkpoint"]), str(files["image"])]
    assert (
        main(
            [
                *attention,
                "--output",
                str(out / "a.png"),
                "--points",
                "20,16; 100,30",
                "--top",
                "3",
                "--stage",
                "2",
                *common,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "viz",
                "ranks",
                str(files["checkpoint"]),
                "--dataset",
                "synthetic",
                "--data",
                str(files["data"]),
                "--output",
                str(out / "r.png"),
                "--queries",
                "2",
                "--top",
                "3",
                "--workers",
                "0",
                *common,
            ]
        )
        == 0
    )
    assert (
        main(["viz", "curves", str(files["run"] / "metrics.jsonl"), "--output", str(out / "c.png")])
        == 0
    )
    printed = capsys.readouterr().out
    for name in ("a.png", "r.png", "c.png"):
        assert min(png_size(out / name)) > 100
        assert f"wrote {out / name}" in printed


def test_cli_errors_are_one_line(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    no_sona = [
        "viz",
        "attention",
        str(files["plain"]),
        str(files["image"]),
        "--output",
        str(files["out"] / "n.png"),
        "--device",
        "cpu",
    ]
    assert main(no_sona) == 2
    err = capsys.readouterr().err
    assert "no SONA block" in err and "Traceback" not in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(
            [
                "viz",
                "attention",
                str(files["checkpoint"]),
                str(files["image"]),
                "--output",
                "x.png",
                "--points",
                "12",
            ]
        )
    assert "row,col" in capsys.readouterr().err
