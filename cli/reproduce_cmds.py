"""``sona reproduce``: the paper's table 5, every row x seed, resumable, with the paper beside."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from model.variants import VARIANTS

from .errors import UserError, user_input
from .training_cmds import add_backbone_options, add_data_options, require_backbone_weights

__all__ = ["add_parsers"]

TABLE_5_ROWS = [name for name in VARIANTS if name != "SONA4-Net"]


def _rows(text: str) -> list[str]:
    rows = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in rows if r not in VARIANTS]
    if unknown or not rows:
        raise argparse.ArgumentTypeError(
            f"unknown row(s) {', '.join(unknown) or text!r}; choose from {', '.join(VARIANTS)}"
        )
    return rows


def _flops(value: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if value >= scale / 10:
            return f"{value / scale:.1f} {unit}"
    return f"{value / 1e9:.3f} GFLOP"


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from model.info import describe
    from model.variants import apply_variant
    from training.config import TRAIN_PRESETS
    from training.datasets import DatasetError, load_dataset, require_evaluable
    from training.reproduce import estimate_cost, plan, run_all, write_table
    from training.trainer import Trainer

    require_backbone_weights(args)
    base = TRAIN_PRESETS[args.preset]
    model = base.model
    if args.backbone_weights:
        model = dataclasses.replace(model, backbone_weights=args.backbone_weights)
    with user_input():
        base = dataclasses.replace(base, model=model, epochs=args.epochs or base.epochs)
    try:
        data = require_evaluable(load_dataset(args.dataset, args.data))
    except DatasetError as exc:
        raise UserError(str(exc)) from exc
    with user_input():
        runs = plan(args.rows, args.seeds, args.out)

    if args.dry_run:
        macs: dict[tuple[int, ...], int] = {}

        def row_macs(row: str) -> int:
            config = apply_variant(base.model, row)
            if config.sona_stages not in macs:
                macs[config.sona_stages] = describe(config).macs
            return macs[config.sona_stages]

        cost = estimate_cost(base, data, args.rows, row_macs)
        print(data.summary())
        print(
            f"{args.preset} preset: {base.epochs} epochs of {cost.batches_per_epoch} batches "
            f"({base.ids_per_batch}x{base.images_per_id}, every {base.epoch_unit.rstrip('s')} "
            f"once per epoch), {cost.train_images:,} training images per run"
        )
        pending_flops = 0.0
        for run in runs:
            flops = cost.flops[run.row]
            state = "done" if run.done else "to run"
            if not run.done:
                pending_flops += flops
            print(f"  {run.row:<14} seed {run.seed}  {_flops(flops):>12}  {state}")
        hours = pending_flops / (args.tflops * 1e12) / 3600
        print(
            f"{sum(not r.done for r in runs)} of {len(runs)} runs to go: "
            f"{_flops(pending_flops)}, about {hours:.2g} GPU-hours at a sustained "
            f"{args.tflops:g} TFLOP/s (--tflops; bench/gpu_check.sh measures a GPU's rate)"
        )
        return 0

    def train(config: Any, folder: Path) -> list[dict[str, Any]]:
        trainer = Trainer(
            config,
            data,
            folder,
            device=args.device,
            workers=args.workers,
            preload=not args.no_preload,
            progress=not args.quiet,
            log=(lambda _: None) if args.quiet else print,
        )
        return trainer.fit().history

    Path(args.out).mkdir(parents=True, exist_ok=True)
    results = run_all(runs, base, data, train=train)
    print(write_table(results, args.dataset, args.out), end="")
    print(f"written: {Path(args.out) / 'table5.md'} and {Path(args.out) / 'table5.csv'}")
    return 0


def add_parsers(sub: Any) -> None:
    parser = sub.add_parser(
        "reproduce",
        help="train and score every row of the paper's table 5 over several seeds",
        description="Reproduce the paper's table 5: each row x seed is trained with the "
        "preset's recipe (in OUT/ROW/seedK, resumable), scored at its last epoch by the "
        "paper's protocol (test set, Euclidean distance on flip-averaged features, no "
        "re-ranking), and tabulated as mean ± std beside the paper's figure. Runs already "
        "finished are skipped, so the same command continues an interrupted table.",
    )
    parser.add_argument(
        "--table", type=int, choices=[5], default=5, help="the paper's table (default: 5)"
    )
    add_data_options(parser)
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="folder for the runs and the table"
    )
    parser.add_argument(
        "--preset",
        choices=["paper", "tiny"],
        default="paper",
        help="training recipe for every row (default: paper)",
    )
    parser.add_argument(
        "--rows",
        type=_rows,
        default=TABLE_5_ROWS,
        metavar="ROW,ROW",
        help=f"rows to run (default: all of table 5: {','.join(TABLE_5_ROWS)}; SONA4-Net is "
        "section 3.4's stage-4 placement)",
    )
    parser.add_argument(
        "--seeds", type=int, default=4, metavar="N", help="runs per row, seeds 0..N-1 (default: 4)"
    )
    parser.add_argument(
        "--epochs", type=int, metavar="N", help="epochs per run (default: the preset's)"
    )
    add_backbone_options(parser)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan and its estimated GPU-hours; train nothing",
    )
    parser.add_argument(
        "--tflops",
        type=float,
        default=100.0,
        metavar="T",
        help="sustained training throughput assumed by --dry-run, in TFLOP/s (default: 100)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    parser.set_defaults(handler=_cmd_reproduce)
