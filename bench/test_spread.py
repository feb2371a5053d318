"""The suite's quality figures across seeds and CPU classes, beside the thresholds they meet.

A test that asserts a quality figure (an mAP gain, an agreement between two runtimes) must
pass on every x86 CPU and every seed, so its threshold has to sit well inside the spread of
that figure. This script measures the spread: each probe re-creates one test's measurement,
runs it for several seeds in a child process under each CPU class (``bench/cpu_class.sh``:
the class's kernels on this machine's cores), and prints, per figure, the minimum, maximum and
the threshold the test holds it to.

    python bench/test_spread.py --probes training --seeds 0,1,2,3 --classes host,avx2
    python bench/test_spread.py --probes export,synthetic --seeds 0,1,2,3,4

Probes: ``dropblock`` (tests/test_dropblock.py, tests/test_variants.py: drop statistics of
random masks), ``training`` (tests/test_training_run.py, 6 epochs of the tiny preset: about a
minute of CPU per seed), ``export`` (tests/test_export.py: ONNX Runtime and OpenVINO int8, bf16
autocast, each against PyTorch fp32), ``synthetic`` (tests/test_synthetic.py: nearest
neighbour on raw thumbnails against chance).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: figure -> (comparison, threshold) as the tests assert them: the table shows the margin.
THRESHOLDS: dict[str, tuple[str, float | tuple[float, float]]] = {
    "loss_last_over_first": ("<", 0.8),
    "test_mAP_gain": (">", 0.03),
    "test_rank10_gain": (">", 0.10),
    "int8_ort_min_cosine": (">", 0.98),
    "int8_ort_topk_overlap": (">", 0.8),
    "int8_ov_vs_ort_min_cosine": (">", 0.99),
    "int8_ov_vs_ort_topk_overlap": (">", 0.8),
    "bf16_min_cosine": (">", 0.99),
    "bf16_topk_overlap": (">", 0.9),
    "raw_rank1_over_chance": (">", 3.0),
    "dropped_fraction_error": ("<", 0.005),
    "border_rate_error": ("<", 0.01),
    "centre_rate_error": ("<", 0.01),
    "corner_rate_error": ("<", 0.03),
    "expectation_max_rel_error": ("<", 0.04),
    "square_dropped_fraction": ("in", (0.08, 0.105)),
    "square_corner_over_centre": ("<", 1 / 3),
    "raw_rank1": ("<", 0.6),
}


def probe_training(seed: int, work: Path) -> dict[str, float]:
    """tests/test_training_run.py's learning test, with ``seed`` as the training seed."""
    import torch

    from model import SONANet
    from training.config import TRAIN_PRESETS
    from training.datasets import load_dataset
    from training.datasets.validation import hold_out_identities
    from training.features import evaluate_net
    from training.synthetic import make_dataset
    from training.trainer import Trainer

    root = work / "synthetic"
    if not root.exists():  # the suite's shared dataset (tests/conftest.py)
        make_dataset(root, identities=40, cameras=3, images_per_camera=4, distractors=4, seed=3)
    data = load_dataset("synthetic", root)
    config = dataclasses.replace(
        TRAIN_PRESETS["tiny"],
        epochs=6,
        warmup_epochs=2,
        milestones=(),
        eval_every=2,
        val_identities=4,
        amp=False,
        seed=seed,
    )
    cpu = torch.device("cpu")
    torch.manual_seed(config.seed)
    untrained = SONANet(dataclasses.replace(config.model, num_classes=data.num_train_pids - 4))
    before = evaluate_net(untrained, data, cpu)
    _, validation = hold_out_identities(data, 4, seed=config.seed)
    before_val = evaluate_net(untrained, validation, cpu)
    run = work / f"run-{seed}"
    result = Trainer(config, data, run, device="cpu", progress=False, log=lambda _: None).fit()
    after = result.history[-1]
    losses = [row["loss"] for row in result.history]
    return {
        "loss_last_over_first": losses[-1] / losses[0],
        "test_mAP_before": before.mAP,
        "test_mAP_after": after["mAP"],
        "test_mAP_gain": after["mAP"] - before.mAP,
        "test_rank1_gain": after["rank1"] - before.rank1,
        "test_rank10_gain": after["rank10"] - before.rank10,
        "val_mAP_before": before_val.mAP,
        "val_mAP_after": after["val_mAP"],
        "val_mAP_gain": after["val_mAP"] - before_val.mAP,
        "val_rank1_gain": after["val_rank1"] - before_val.rank1,
    }


def probe_export(seed: int, work: Path) -> dict[str, float]:
    """tests/test_export.py's agreement figures, with ``seed`` for the network's weights."""
    import torch

    from model import PRESETS, SONANet, save_checkpoint
    from model.cpu import cpu_has_bf16
    from model.encoders import OnnxEncoder, OpenVinoEncoder, TorchEncoder, agreement
    from model.export import export_checkpoint
    from model.preprocess import image_files, load_crops
    from training.synthetic import make_dataset

    folder = work / "crops"
    if not folder.exists():
        make_dataset(folder, identities=30, cameras=3, seed=5)
    crops = {
        split: load_crops(image_files(folder / split), (64, 32))
        for split in ("bounding_box_train", "bounding_box_test")
    }
    torch.manual_seed(seed)  # a random tiny network with BatchNorm statistics off their defaults
    net = SONANet(dataclasses.replace(PRESETS["tiny"], num_classes=0))
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
    checkpoint = save_checkpoint(work / f"tiny-{seed}.pt", net.eval())
    int8 = export_checkpoint(
        checkpoint, work / f"tiny-{seed}.int8.onnx", int8=True,
        calibration=crops["bounding_box_train"],
    )  # fmt: skip
    test = crops["bounding_box_test"]

    def embed_all(encoder: Callable[[torch.Tensor], np.ndarray]) -> np.ndarray:
        return np.concatenate([encoder(b) for b in test.split(17)])

    reference = embed_all(TorchEncoder(net, channels_last=False))
    ort = embed_all(OnnxEncoder(int8))
    figures = {}
    for name, candidate, base in (
        ("int8_ort", ort, reference),
        ("int8_ov_vs_ort", embed_all(OpenVinoEncoder(int8)), ort),
    ):
        found = agreement(base, candidate)
        figures[f"{name}_min_cosine"] = found["min_cosine"]
        figures[f"{name}_topk_overlap"] = found["topk_overlap"]
    if cpu_has_bf16():
        found = agreement(reference, embed_all(TorchEncoder(net, bf16=True)))
        figures["bf16_min_cosine"] = found["min_cosine"]
        figures["bf16_topk_overlap"] = found["topk_overlap"]
    return figures


def probe_synthetic(seed: int, work: Path) -> dict[str, float]:
    """tests/test_synthetic.py's raw-pixel nearest neighbour, with ``seed`` for the data."""
    from PIL import Image

    from training.synthetic import make_dataset

    root = work / f"market-{seed}"
    make_dataset(root, 60, 4, images_per_camera=3, seed=seed)

    def records(split: str) -> list[tuple[Path, int, int]]:
        paths = sorted((root / split).glob("*.jpg"))
        return [(p, int(p.name[:4]), int(p.name[6])) for p in paths]

    def thumbnails(rows: list[tuple[Path, int, int]]) -> np.ndarray:
        x = []
        for path, _, _ in rows:
            with Image.open(path) as im:
                x.append(np.asarray(im.resize((8, 16), Image.BILINEAR), np.float32).ravel())
        x = np.stack(x)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    query, gallery = records("query"), records("bounding_box_test")
    sim = thumbnails(query) @ thumbnails(gallery).T
    g_pid = np.array([r[1] for r in gallery])
    g_cam = np.array([r[2] for r in gallery])
    hits, chance = [], []
    for i, (_, pid, cam) in enumerate(query):
        valid = ~((g_pid == pid) & (g_cam == cam))
        match = (g_pid == pid) & valid
        hits.append(bool(match[np.argmax(np.where(valid, sim[i], -np.inf))]))
        chance.append(match.sum() / valid.sum())
    rank1 = float(np.mean(hits))
    return {"raw_rank1": rank1, "raw_rank1_over_chance": rank1 / float(np.mean(chance))}


def probe_dropblock(seed: int, work: Path) -> dict[str, float]:
    """tests/test_dropblock.py's and tests/test_variants.py's drop statistics under ``seed``."""
    import torch

    from model import DropBlock2d
    from model.erasing import SquareDropBlock2d

    cpu = torch.device("cpu")
    torch.manual_seed(seed)
    keep = DropBlock2d(0.1, 5, 8).train().mask(8192, 48, 16, cpu)
    figures = {"dropped_fraction_error": abs((1 - keep).mean().item() - 0.1)}
    torch.manual_seed(seed)
    rate = (1 - DropBlock2d(0.1, 5, 8).mask(6000, 48, 16, cpu).squeeze(1)).mean(0)
    border = torch.cat([rate[0], rate[-1], rate[:, 0], rate[:, -1]]).mean().item()
    figures["border_rate_error"] = abs(border - 0.1)
    figures["centre_rate_error"] = abs(rate[16:32, 4:12].mean().item() - 0.1)
    figures["corner_rate_error"] = abs(rate[0, 0].item() - 0.1)
    torch.manual_seed(seed)
    block = DropBlock2d(0.2, 5, 8).train()
    x = torch.rand(1, 4, 24, 16) + 0.5
    draws = x.expand(5000, -1, -1, -1)
    mean = torch.stack([block(draws).mean(0, keepdim=True) for _ in range(4)]).mean(0)
    figures["expectation_max_rel_error"] = ((mean - x).abs() / x).max().item()
    torch.manual_seed(seed)
    square = 1 - SquareDropBlock2d(drop_prob=0.1, block_size=5).mask(4000, 48, 16, cpu)[:, 0]
    figures["square_dropped_fraction"] = square.mean().item()
    figures["square_corner_over_centre"] = (square[:, 0, 0].mean() / square[:, 24, 8].mean()).item()
    return figures


PROBES: dict[str, Callable[[int, Path], dict[str, float]]] = {
    "dropblock": probe_dropblock,
    "training": probe_training,
    "export": probe_export,
    "synthetic": probe_synthetic,
}


def child(probe: str, seeds: list[int], out: Path) -> None:
    """Runs one probe for every seed in this process (already under its CPU class)."""
    import torch

    from model.cpu import cpu_info

    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sona-spread-") as tmp:
        for seed in seeds:
            rows.append({"seed": seed} | PROBES[probe](seed, Path(tmp)))
            print(f"  {probe} seed {seed}: {rows[-1]}", flush=True)
    out.write_text(json.dumps({"class": cpu_info().isa_class, "rows": rows}))


def bound(figure: str) -> str:
    """The test's threshold on ``figure`` as text; figures without one are only reported."""
    if figure not in THRESHOLDS:
        return "(reported)"
    op, limit = THRESHOLDS[figure]
    if isinstance(limit, tuple):
        return f"in ({limit[0]}, {limit[1]})"
    return f"{op} {limit:.3g}"


def table(results: dict[str, dict[str, list[dict]]]) -> None:
    """One row per figure: its range under each class, and the test's threshold."""
    classes = list(results)
    figures = list(dict.fromkeys(k for r in results.values() for rows in r.values()
                                 for row in rows for k in row if k != "seed"))  # fmt: skip
    print("\n| figure | threshold | " + " | ".join(classes) + " | all: min .. max (n) |")
    print("|---|---|" + "---|" * len(classes) + "---|")
    for figure in figures:
        every, cells = [], []
        for klass in classes:
            values = [row[figure] for rows in results[klass].values() for row in rows
                      if figure in row]  # fmt: skip
            every += values
            cells.append(f"{min(values):.4f} .. {max(values):.4f}" if values else "-")
        span = f"{min(every):.4f} .. {max(every):.4f} ({len(every)})"
        print(f"| {figure} | {bound(figure)} | " + " | ".join(cells) + f" | {span} |")


def run_child(probe: str, klass: str, seed: int, out: Path) -> bool:
    """One probe for one seed under one CPU class; False where the class cannot be made."""
    print(f"# {probe} under {klass}, seed {seed}", flush=True)
    command = ["bash", str(HERE / "cpu_class.sh"), klass, "--", sys.executable, __file__]
    command += ["--child", probe, "--seeds", str(seed), "--json", str(out)]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, check=False)
    if done.returncode == 77:
        return False
    if done.returncode != 0:
        raise SystemExit(f"{probe} failed under {klass} with seed {seed} ({done.returncode})")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", default="dropblock,synthetic,export,training")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--classes", default="host,avx512-bf16,avx512-vnni,avx2")
    parser.add_argument(
        "--keep", type=Path, help="folder for the figures of each probe, class and seed (reused)"
    )
    parser.add_argument(
        "--no-run", action="store_true", help="only tabulate what --keep holds already"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.child:
        child(args.child, seeds, args.json)
        return
    classes = args.classes.split(",")
    results: dict[str, dict[str, list[dict]]] = {}
    unmaskable: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="sona-spread-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        # seed by seed, every class in turn: an interrupted run still compares the classes
        for probe in args.probes.split(","):
            for seed in seeds:
                for klass in classes:
                    out = folder / f"{probe}-{klass}-{seed}.json"
                    if not out.exists() and (args.no_run or klass in unmaskable):
                        continue
                    if not out.exists() and not run_child(probe, klass, seed, out):
                        print(f"({klass}: this machine cannot mask its CPU; skipped)")
                        unmaskable.add(klass)
                        continue
                    found = json.loads(out.read_text())
                    label = f"{klass} ({found['class']})" if klass == "host" else klass
                    results.setdefault(label, {}).setdefault(probe, []).extend(found["rows"])
    table(results)


if __name__ == "__main__":
    main()
