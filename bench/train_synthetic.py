"""Train the ``tiny`` preset on a synthetic set: rank-1/mAP before and after, and the ablation.

Every variant (no SONA, SONA after stage 2, 3, both) trains with the same seed, data and
budget; the untrained network of each is evaluated first. Prints a Markdown table and writes
``results.json`` into the output folder.

    python bench/train_synthetic.py --out runs/bench-synthetic
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from model import SONANet
from model.cpu import cpu_info
from training.config import TRAIN_PRESETS
from training.datasets import load_dataset
from training.features import evaluate_net
from training.synthetic import is_complete, make_dataset
from training.trainer import Trainer

VARIANTS = {"none": (), "2": (2,), "3": (3,), "2+3": (2, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-synthetic"))
    parser.add_argument("--variants", default="none,2,3,2+3", help="comma-separated: none,2,3,2+3")
    parser.add_argument("--identities", type=int, default=100)
    parser.add_argument("--cameras", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0, help="data and training seed")
    parser.add_argument("--epochs", type=int, help="default: the tiny preset's")
    args = parser.parse_args()

    data_root = args.out / "data"
    if not is_complete(data_root):
        make_dataset(data_root, args.identities, args.cameras, seed=args.seed, overwrite=True)
    data = load_dataset("synthetic", data_root)
    print(data.summary())
    base = TRAIN_PRESETS["tiny"]
    base = dataclasses.replace(base, seed=args.seed, epochs=args.epochs or base.epochs)

    results = []
    for name in args.variants.split(","):
        config = dataclasses.replace(
            base, model=dataclasses.replace(base.model, sona_stages=VARIANTS[name])
        )
        torch.manual_seed(config.seed)  # the same initial weights the trainer starts from
        untrained = SONANet(dataclasses.replace(config.model, num_classes=data.num_train_pids))
        before = evaluate_net(untrained, data, torch.device("cpu"))
        start = time.perf_counter()
        result = Trainer(config, data, args.out / f"sona-{name}", progress=False).fit(resume=False)
        seconds = time.perf_counter() - start
        last = result.history[-1]
        results.append(
            {
                "variant": name,
                "epochs": config.epochs,
                "before": {"rank1": before.rank1, "mAP": before.mAP},
                "after": {k: last[k] for k in ("rank1", "rank5", "mAP", "mINP")},
                "train_seconds": seconds,
                "images_per_s": sum(r["images_per_s"] for r in result.history)
                / len(result.history),
            }
        )
        print(json.dumps(results[-1]))

    cpu = cpu_info().describe()
    machine = f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    (args.out / "results.json").write_text(
        json.dumps({"machine": machine, "results": results}, indent=2)
    )
    print(
        f"\n{data.name}: {len(data.train)} train images ({data.num_train_pids} ids), "
        f"{len(data.query)} queries, {len(data.gallery)} gallery; {machine}\n"
    )
    print(
        "| SONA after | rank-1 before | mAP before | rank-1 after | mAP after | mINP after "
        "| train time | img/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['variant']} | {r['before']['rank1']:.1%} | {r['before']['mAP']:.1%} | "
            f"{r['after']['rank1']:.1%} | {r['after']['mAP']:.1%} | {r['after']['mINP']:.1%} | "
            f"{r['train_seconds'] / 60:.1f} min | {r['images_per_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
