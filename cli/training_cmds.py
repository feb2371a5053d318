"""Training commands: ``sona synth``, ``sona train`` and ``sona eval``."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from model.variants import VARIANTS
from training.options import DISTANCES, EPOCH_UNITS

from .args import batch_shape, block_size, hw, positive
from .errors import UserError, user_input
from .model_cmds import add_architecture_options, add_device_option

__all__ = [
    "add_backbone_options",
    "add_data_options",
    "add_parsers",
    "require_backbone_weights",
]


def _cmd_synth(args: argparse.Namespace) -> int:
    from training.synthetic import make_dataset

    try:
        with user_input():  # counts and sizes the generator cannot honour
            summary = make_dataset(
                args.output,
                args.identities,
                args.cameras,
                images_per_camera=args.images_per_camera,
                distractors=args.distractors,
                image_size=args.size,
                seed=args.seed,
                train_fraction=args.train_fraction,
                quality=args.quality,
                overwrite=args.overwrite,
            )
    except (FileExistsError, NotADirectoryError) as exc:
        raise UserError(str(exc)) from exc
    print(summary)
    return 0


def _add_synth(sub: Any) -> None:
    parser = sub.add_parser(
        "synth",
        help="generate a synthetic pedestrian dataset in the Market-1501 layout",
        description="Render a seeded synthetic re-ID dataset (bounding_box_train/, query/, "
        "bounding_box_test/, synthetic.json) for tests, demos and smoke-training. "
        "The same seed gives the same files.",
    )
    parser.add_argument(
        "output",
        metavar="OUTPUT",
        help="folder to write; must be empty or absent unless --overwrite",
    )
    parser.add_argument(
        "--identities",
        type=int,
        default=100,
        metavar="N",
        help="labelled identities, split between train and test (default: 100)",
    )
    parser.add_argument(
        "--cameras",
        type=int,
        default=6,
        metavar="N",
        help="cameras, 2 to 9; each identity appears in at least 2 (default: 6)",
    )
    parser.add_argument(
        "--images-per-camera",
        type=int,
        default=3,
        metavar="N",
        help="images of an identity in each camera it appears in; for test "
        "identities one of them is the query (default: 3)",
    )
    parser.add_argument(
        "--distractors",
        type=int,
        default=None,
        metavar="N",
        help="extra gallery-only identities labelled 0000 (default: identities // 5)",
    )
    parser.add_argument(
        "--size",
        type=hw,
        default=(128, 64),
        metavar="HxW",
        help="image height x width in pixels (default: 128x64, as Market-1501)",
    )
    parser.add_argument(
        "--train-fraction",
        type=float,
        default=0.5,
        metavar="F",
        help="share of the identities used for training (default: 0.5)",
    )
    parser.add_argument(
        "--quality", type=int, default=90, metavar="Q", help="JPEG quality, 1 to 100 (default: 90)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed; the same seed gives the same files (default: 0)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the splits and synthetic.json of a non-empty OUTPUT "
        "(other files there are left alone)",
    )
    parser.set_defaults(handler=_cmd_synth)


def require_backbone_weights(args: argparse.Namespace) -> None:
    """The paper preset starts from ImageNet weights: refuse to start without them, unless
    --from-scratch says random weights are meant."""
    if args.preset == "paper" and not args.backbone_weights and not args.from_scratch:
        raise UserError(
            "the paper preset starts from torchvision's ImageNet ResNet-50 (IMAGENET1K_V1, "
            "resnet50-0676ba61.pth): pass it with --backbone-weights FILE, or --from-scratch to "
            "train from random weights"
        )


def add_backbone_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backbone-weights",
        metavar="PATH",
        help="torchvision ResNet state dict to start from (the paper: ImageNet's "
        "resnet50-0676ba61.pth; required by --preset paper unless --from-scratch)",
    )
    parser.add_argument(
        "--from-scratch",
        action="store_true",
        help="--preset paper: train from random weights, knowingly (the paper does not)",
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from model.variants import apply_variant
    from training.config import TRAIN_PRESETS
    from training.datasets import DatasetError, load_dataset
    from training.trainer import Trainer

    if args.preset is None:
        args.preset = "adapt" if args.init else "paper"
    if args.init:
        from training.finetune import init_config

        if args.backbone_weights or args.from_scratch:
            raise UserError(
                "--init starts from a checkpoint's weights: drop --backbone-weights "
                "and --from-scratch"
            )
        base = init_config(args.init)
    else:
        if args.preset == "adapt":
            raise UserError("--preset adapt fine-tunes a trained network: give --init CHECKPOINT")
        require_backbone_weights(args)
        base = TRAIN_PRESETS[args.preset].model
    config = TRAIN_PRESETS[args.preset]
    model = base
    if args.variant:
        model = apply_variant(model, args.variant)
    block = {}
    if args.block_size:
        block = {"block_height": args.block_size[0], "block_width": args.block_size[1]}
    try:
        model = dataclasses.replace(
            model,
            **block,
            **{
                k: v
                for k, v in {
                    "depth": args.depth,
                    "sona_stages": args.sona_stages,
                    "input_size": args.input,
                    "drop_prob": args.drop_prob,
                    "backbone_weights": args.backbone_weights,
                }.items()
                if v is not None
            },
        )
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if model.drop == "dropblock" and model.block_height != model.block_width and args.block_size:
        raise UserError(
            f"the original DropBlock (BL+DB) drops square blocks; got --block-size "
            f"{model.block_height}x{model.block_width} (give one number, e.g. --block-size 5)"
        )
    if args.init:
        from training.finetune import check_architecture

        check_architecture(args.init, base, model)
        # cutout keeps the preset's share of the image's height
        cutout = round(config.cutout * model.input_size[0] / config.model.input_size[0])
        config = dataclasses.replace(config, init=str(args.init), cutout=cutout)
    overrides = {
        "epochs": args.epochs,
        "base_lr": args.lr,
        "eval_every": args.eval_every,
        "seed": args.seed,
        "triplet_margin": args.triplet_margin,
        "distance": args.distance,
        "val_identities": args.val_identities,
        "epoch_unit": args.epoch_unit,
    }
    if args.batch:
        overrides["ids_per_batch"], overrides["images_per_id"] = args.batch
    if args.no_amp:
        overrides["amp"] = False
    with user_input():
        config = dataclasses.replace(
            config, model=model, **{k: v for k, v in overrides.items() if v is not None}
        )
    data = load_dataset(args.dataset, args.data)
    try:
        trainer = Trainer(
            config,
            data,
            args.output,
            device=args.device,
            workers=args.workers,
            preload=not args.no_preload,
            progress=not args.quiet,
            stop_after=args.stop_after,
        )
    except DatasetError as exc:
        raise UserError(str(exc)) from exc
    if trainer.is_main:
        print(trainer.data.summary())
        if trainer.validation is not None:
            print(trainer.validation.summary())
    result = trainer.fit(resume=not args.no_resume)
    if trainer.is_main and result.history and "mAP" in result.history[-1]:
        last = result.history[-1]
        print(
            f"last epoch {last['epoch']} (test set, {trainer.config.distance}): rank-1 "
            f"{last['rank1']:.2%}  mAP {last['mAP']:.2%}  -> {result.run_dir / 'last.pt'}"
        )
    if trainer.is_main and result.best:
        best = result.best
        print(
            f"best on the validation identities: epoch {best['epoch']}  rank-1 "
            f"{best['val_rank1']:.2%}  mAP {best['val_mAP']:.2%}  -> {result.run_dir / 'best.pt'}"
        )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    if args.tracks:
        from .adapt_cmds import eval_tracks

        if args.dataset or args.data:
            raise UserError("--tracks scores a training-set folder: drop --dataset and --data")
        return eval_tracks(args)
    if not (args.dataset and args.data and args.checkpoints):
        raise UserError("give CHECKPOINT(s) with --dataset and --data, or --tracks DIR")
    import numpy as np

    from model import load_checkpoint
    from model.checkpoint import checkpoint_config, read_checkpoint
    from model.device import resolve_device
    from training.data import ImageDataset
    from training.datasets import load_dataset, require_evaluable
    from training.features import evaluate_net

    for path in args.checkpoints:  # every checkpoint usable, before any line of the table
        checkpoint_config(read_checkpoint(path), path)
    data = require_evaluable(load_dataset(args.dataset, args.data))
    device = resolve_device(args.device)
    images: dict[tuple[int, int], tuple[ImageDataset, ImageDataset]] = {}
    rows = []
    columns = ("mAP", "rank1", "rank5", "rank10", "mINP")
    header = f"{'checkpoint':<40} {'mAP':>7} {'R-1':>7} {'R-5':>7} {'R-10':>7} {'mINP':>7}"
    for path in args.checkpoints:
        net, _ = load_checkpoint(path, device)
        size = net.config.input_size
        if size not in images:
            preload = not args.no_preload
            images[size] = (
                ImageDataset(data.query, size, preload=preload),
                ImageDataset(data.gallery, size, preload=preload),
            )
        query, gallery = images[size]
        metrics = evaluate_net(
            net,
            data,
            device,
            query=query,
            gallery=gallery,
            rerank=args.rerank,
            distance=args.distance,
            batch_size=args.batch_size,
            workers=args.workers,
            map_max_rank=args.max_rank,
        )
        row = [getattr(metrics, c) * 100 for c in columns]
        if not rows:  # after the first evaluation: an error before it leaves no half table
            print(header)
        rows.append(row)
        print(f"{str(path)[-40:]:<40} " + " ".join(f"{v:>7.2f}" for v in row))
    if len(rows) > 1:
        table = np.array(rows)
        print(
            f"{'mean (' + str(len(rows)) + ' runs)':<40} "
            + " ".join(f"{v:>7.2f}" for v in table.mean(0))
        )
        print(f"{'std':<40} " + " ".join(f"{v:>7.2f}" for v in table.std(0, ddof=1)))
    print(
        f"({data.name}: {len(data.query)} queries, {len(data.gallery)} gallery images, "
        f"{args.distance} distance"
        + (", k-reciprocal re-ranking" if args.rerank else "")
        + (f", mAP over the first {args.max_rank} ranks" if args.max_rank else "")
        + ")"
    )
    return 0


def add_data_options(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    from training.datasets import DATASET_NAMES

    parser.add_argument(
        "--dataset", required=required, choices=DATASET_NAMES, help="dataset layout under --data"
    )
    parser.add_argument(
        "--data",
        required=required,
        metavar="ROOT",
        help="dataset folder (for custom: a folder per identity, or a CSV file)",
    )
    add_device_option(parser)
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="data-loading processes when images are not preloaded (default 2)",
    )
    parser.add_argument(
        "--no-preload",
        action="store_true",
        help="decode images per batch instead of once into memory "
        "(for datasets larger than memory)",
    )


def add_parsers(sub: Any) -> None:
    _add_synth(sub)
    train = sub.add_parser(
        "train",
        help="train SONA-Net (resumes when OUTPUT holds an unfinished run)",
        description="Train SONA-Net with the paper's recipe (or the tiny preset). Writes "
        "last.pt (resumable), best.pt, metrics.jsonl and config.json into --output. Run under "
        "torchrun for several GPUs: torchrun --nproc-per-node N -m cli train ...",
    )
    add_data_options(train)
    train.add_argument("--output", required=True, metavar="DIR", help="run folder")
    train.add_argument(
        "--preset",
        choices=["paper", "tiny", "adapt"],
        help="paper: ResNet-50 at 384x128, 400 epochs; tiny: ResNet-18 for CPUs; adapt: 10 "
        "short epochs at a low rate, for --init (default: adapt with --init, else paper)",
    )
    train.add_argument(
        "--init",
        metavar="CHECKPOINT",
        help="fine-tune this trained SONA-Net: its backbone, SONA blocks and feature layers, "
        "new classifiers for --data's identities; the architecture is the checkpoint's",
    )
    train.add_argument("--epochs", type=int, help="total epochs (schedule milestones unchanged)")
    train.add_argument(
        "--batch",
        type=batch_shape,
        metavar="PxK",
        help="identities x images per identity per batch (paper: 32x4)",
    )
    train.add_argument("--lr", type=float, help="peak learning rate after warm-up (paper: 1e-3)")
    train.add_argument(
        "--triplet-margin",
        type=float,
        metavar="M",
        help="hinge triplet loss with this margin (default: soft margin)",
    )
    add_architecture_options(train)
    train.add_argument(
        "--variant",
        choices=list(VARIANTS),
        help="a row of the paper's table 5 (SONA placement and local-branch drop; SONA4-Net is "
        "section 3.4's stage-4 placement); --sona-stages and the drop options refine it "
        "(default: the preset's, SONA2+3-Net)",
    )
    train.add_argument(
        "--drop-prob",
        type=float,
        metavar="P",
        help="DropBlock / DropBlock* drop probability (default: the preset's, 0.1)",
    )
    train.add_argument(
        "--block-size",
        type=block_size,
        metavar="HxW",
        help="DropBlock* block height x width, or one number for the square DropBlock of BL+DB "
        "(default: the preset's, 5x8 for paper; BL+DB uses the height, 5)",
    )
    train.add_argument(
        "--val-identities",
        type=int,
        metavar="N",
        help="hold out N training identities to choose best.pt (default: 0, no best.pt; the "
        "test set never chooses a checkpoint)",
    )
    train.add_argument(
        "--distance",
        choices=DISTANCES,
        help="how evaluations match (default: euclidean on raw features, the paper's; "
        "cosine for the tiny preset, the service's)",
    )
    train.add_argument(
        "--epoch-unit",
        choices=EPOCH_UNITS,
        help="what an epoch visits: every identity once (BFE's, the paper's) or every image "
        "(default: the preset's; identities for paper)",
    )
    add_backbone_options(train)
    train.add_argument(
        "--eval-every",
        type=int,
        metavar="N",
        help="evaluate every N epochs and at the end (0: only at the end)",
    )
    train.add_argument("--seed", type=int, help="random seed (default 0)")
    train.add_argument("--no-amp", action="store_true", help="CUDA: train in float32")
    train.add_argument(
        "--no-resume",
        action="store_true",
        help="start afresh even if --output holds a run (its files are replaced)",
    )
    train.add_argument(
        "--stop-after",
        type=int,
        metavar="N",
        help="stop after N epochs in this call; run again to resume",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=_cmd_train)

    evaluate = sub.add_parser(
        "eval",
        help="rank-1/5/10, mAP and mINP of one or more checkpoints",
        description="Evaluate checkpoints on a dataset's query/gallery split (Market-1501 "
        "protocol, flip-averaged embeddings, Euclidean distance as the paper or cosine). With "
        "several checkpoints (the paper reports four runs per configuration) prints mean and "
        "standard deviation. With --tracks DIR instead: on a site's own footage (a folder of "
        "sona footage export-training), tracks as identities, beside raw pixels and a random "
        "network.",
    )
    evaluate.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT")
    add_data_options(evaluate, required=False)
    from .adapt_cmds import add_track_eval_options

    add_track_eval_options(evaluate)
    evaluate.add_argument(
        "--rerank", action="store_true", help="k-reciprocal re-ranking (k1 20, k2 6, lambda 0.3)"
    )
    evaluate.add_argument(
        "--distance",
        choices=DISTANCES,
        default="euclidean",
        help="euclidean on the raw flip-averaged features (the paper's protocol) or cosine on "
        "L2-normalised ones (what the service ranks by) (default: euclidean)",
    )
    evaluate.add_argument(
        "--max-rank",
        type=positive,
        metavar="N",
        help="mAP over each query's first N ranks only, as BFE's evaluator computes it with "
        "50 (reads lower than the full mAP) (default: the whole ranking)",
    )
    evaluate.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    evaluate.set_defaults(handler=_cmd_eval)
