"""Model commands: ``sona info``, ``sona export`` and ``sona viz``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .args import hw, points, positive, stages
from .errors import user_input

if TYPE_CHECKING:
    from model import SONANetConfig

__all__ = ["add_architecture_options", "add_device_option", "add_parsers"]


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N"
    )


def _model_config(args: argparse.Namespace) -> SONANetConfig:
    """The configuration named by --checkpoint or --preset, with any explicit overrides."""
    from model import PRESETS
    from model.checkpoint import checkpoint_config, read_checkpoint

    if args.checkpoint:
        config = checkpoint_config(read_checkpoint(args.checkpoint), args.checkpoint)
    else:
        config = PRESETS[args.preset]
    overrides = {
        "depth": args.depth,
        "sona_stages": args.sona_stages,
        "input_size": args.input,
        "num_classes": args.num_classes,
    }
    with user_input():
        return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def _stage_label(stages: tuple[int, ...]) -> str:
    return "+".join(map(str, stages)) if stages else "none"


def _cmd_info(args: argparse.Namespace) -> int:
    from model.info import baseline_resnet50_info, describe

    config = _model_config(args)
    rows = []
    if args.variants:
        for stages in ((), (2,), (3,), (2, 3)):
            variant = dataclasses.replace(config, sona_stages=stages)
            name = f"SONA{_stage_label(stages)}-Net" if stages else "BL+DB* (no SONA)"
            rows.append(describe(variant, name))
    else:
        rows.append(describe(config, f"SONA{_stage_label(config.sona_stages)}-Net"))
    if args.baseline:
        rows.append(baseline_resnet50_info(num_classes=config.num_classes or 751))

    if args.json:
        out = [dataclasses.asdict(r) | {"macs_per_embedding": r.macs_per_embedding} for r in rows]
        print(json.dumps(out, indent=2))
        return 0

    head = rows[0]
    print(
        f"depth {config.depth}, SONA after stage(s) {_stage_label(config.sona_stages)}, "
        f"input {config.input_size[0]}x{config.input_size[1]}, {config.num_classes} classes, "
        f"{config.embedding_dim}-d embedding"
    )
    print(f"{'model':<22} {'input':>8} {'params':>9} {'infer.':>9} {'GMACs':>7} {'GMACs/emb':>10}")
    for r in rows:
        print(
            f"{r.name:<22} {r.input_size[0]:>4}x{r.input_size[1]:<3} {r.params / 1e6:>8.2f}M "
            f"{r.params_inference / 1e6:>8.2f}M {r.macs / 1e9:>7.2f} "
            f"{r.macs_per_embedding / 1e9:>10.2f}"
        )
    print("(infer.: parameters without the identity classifiers; GMACs: one image, one pass;")
    print(" GMACs/emb: a flip-averaged embedding, image and mirror)")
    print(f"feature maps of {head.name} (channels x height x width):")
    for stage, shape in head.feature_maps.items():
        print(f"  {stage:<7} {' x '.join(map(str, shape))}")
    return 0


def add_architecture_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--depth", type=int, choices=[18, 34, 50], help="ResNet depth")
    parser.add_argument(
        "--sona-stages",
        type=stages,
        metavar="STAGES",
        help="where SONA is injected: 2, 3, 2,3 or none",
    )
    parser.add_argument("--input", type=hw, metavar="HxW", help="input size, e.g. 384x128")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        choices=["paper", "tiny"],
        default="paper",
        help="named configuration to start from (default: paper)",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="take the configuration from this checkpoint instead of a preset",
    )
    add_architecture_options(parser)
    parser.add_argument(
        "--num-classes",
        type=int,
        metavar="N",
        help="training identities (classifier width; 0 for none)",
    )


def _cmd_export(args: argparse.Namespace) -> int:
    from training.export_check import export_and_check

    suffix = ".int8.onnx" if args.int8 else ".onnx"
    output = args.output or args.checkpoint.with_suffix(suffix)
    with user_input():  # its ValueErrors refuse options: folders, image counts, --int8 alone
        export_and_check(
            args.checkpoint,
            output,
            int8=args.int8,
            calibrate=args.calibrate,
            calibration_images=args.calibration_images,
            method=args.method,
            check=args.check,
            check_images=args.check_images,
        )
    print(f"serve it: SONA_CHECKPOINT={args.checkpoint} SONA_ONNX_MODEL={output} sona serve")
    return 0


def _add_export(sub: Any) -> None:
    parser = sub.add_parser(
        "export",
        help="export a checkpoint's embedding network to ONNX (fp32 or static int8)",
        description="Write the embedding network (normalised float32 [B, 3, H, W] in, "
        "flip-averaged L2-normalised [B, D] out, dynamic batch) to ONNX, then check it "
        "against PyTorch. --int8 quantises it statically with calibration crops: the "
        "fastest way to serve on a CPU (see bench/RESULTS.md).",
    )
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT")
    parser.add_argument(
        "-o", "--output", type=Path, help="default: CHECKPOINT with .onnx or .int8.onnx"
    )
    parser.add_argument("--int8", action="store_true", help="static int8 quantisation")
    parser.add_argument(
        "--calibrate",
        type=Path,
        metavar="FOLDER",
        help="--int8: crops to calibrate on (searched recursively), like the served ones",
    )
    parser.add_argument(
        "--calibration-images",
        type=int,
        default=256,
        metavar="N",
        help="--int8: crops from --calibrate used to choose activation ranges",
    )
    parser.add_argument(
        "--method",
        choices=["minmax", "percentile", "entropy"],
        default="minmax",
        help="--int8: how activation ranges are chosen from the calibration crops (minmax "
        "needs the least memory; percentile and entropy grow with the crops)",
    )
    parser.add_argument(
        "--check",
        type=Path,
        metavar="FOLDER",
        help="crops to compare PyTorch and ONNX on (default: a synthetic set)",
    )
    parser.add_argument(
        "--check-images",
        type=int,
        default=200,
        metavar="N",
        help="crops the export is checked on against PyTorch fp32",
    )
    parser.set_defaults(handler=_cmd_export)


def _cmd_attention(args: argparse.Namespace) -> int:
    from model import load_checkpoint
    from model.device import resolve_device
    from training.viz import attention_figure

    net, _ = load_checkpoint(args.checkpoint, resolve_device(args.device))
    with user_input():  # points outside the image, a stage without SONA
        path = attention_figure(
            net, args.image, args.output, points=args.points, stage=args.stage, top=args.top
        )
    print(f"wrote {path}")
    return 0


def _cmd_ranks(args: argparse.Namespace) -> int:
    from model import load_checkpoint
    from model.device import resolve_device
    from training.datasets import load_dataset
    from training.viz import rank_list_figure

    device = resolve_device(args.device)
    data = load_dataset(args.dataset, args.data)
    net, _ = load_checkpoint(args.checkpoint, device)
    with user_input():
        path = rank_list_figure(
            net,
            data,
            args.output,
            queries=args.queries,
            top=args.top,
            seed=args.seed,
            device=device,
            batch_size=args.batch_size,
            workers=args.workers,
        )
    print(f"wrote {path}")
    return 0


def _cmd_curves(args: argparse.Namespace) -> int:
    from training.viz import plot_training_curves

    with user_input():  # a run folder without a metrics file of epochs
        path = plot_training_curves(args.run, args.output)
    print(f"wrote {path}")
    return 0


def _add_viz(sub: Any) -> None:
    viz = sub.add_parser(
        "viz",
        help="figures: SONA attention maps, rank lists, training curves (PNG)",
        description="Draw figures of a model or a training run as PNG files (needs matplotlib).",
    )
    kinds = viz.add_subparsers(dest="viz_command", metavar="FIGURE", required=True)

    attention = kinds.add_parser(
        "attention",
        help="where a SONA block looks, from reference points on one crop (paper figure 3)",
        description="For one pedestrian crop, draw a SONA block's attention: per reference "
        "point (green) its most related positions (red), plus the mean attention received.",
    )
    attention.add_argument("checkpoint", metavar="CHECKPOINT", help="a SONA-Net checkpoint")
    attention.add_argument("image", metavar="IMAGE", help="a pedestrian crop (JPEG/PNG/...)")
    attention.add_argument("--output", required=True, metavar="PNG", help="figure to write")
    attention.add_argument(
        "--points",
        type=points,
        metavar="'R,C;R,C'",
        help="reference points as row,col in pixels of IMAGE, separated by ';' "
        "(default: head, torso, legs and the top-left background corner)",
    )
    attention.add_argument(
        "--stage",
        type=int,
        choices=[2, 3],
        help="which SONA block: after stage 2 or 3 (default: the first the model has)",
    )
    attention.add_argument(
        "--top",
        type=positive,
        default=10,
        metavar="N",
        help="related positions drawn per reference point (default 10)",
    )
    add_device_option(attention)
    attention.set_defaults(handler=_cmd_attention)

    from training.datasets import DATASET_NAMES

    ranks = kinds.add_parser(
        "ranks",
        help="query crops and their top-ranked gallery crops, framed right or wrong",
        description="Evaluate a checkpoint on a dataset's query/gallery split and draw rank "
        "lists for some queries (half rank-1 successes, half failures where possible). Same "
        "identity + same camera gallery items are skipped, as the Market-1501 protocol does.",
    )
    ranks.add_argument("checkpoint", metavar="CHECKPOINT", help="a SONA-Net checkpoint")
    ranks.add_argument(
        "--dataset", required=True, choices=DATASET_NAMES, help="dataset layout under --data"
    )
    ranks.add_argument("--data", required=True, metavar="ROOT", help="dataset folder")
    ranks.add_argument("--output", required=True, metavar="PNG", help="figure to write")
    ranks.add_argument(
        "--queries", type=positive, default=8, metavar="N", help="queries shown (default 8)"
    )
    ranks.add_argument(
        "--top",
        type=positive,
        default=10,
        metavar="N",
        help="gallery items per query (default 10)",
    )
    ranks.add_argument(
        "--seed", type=int, default=0, help="seed choosing the queries shown (default 0)"
    )
    ranks.add_argument(
        "--batch-size", type=positive, default=64, metavar="N", help="images per forward pass"
    )
    ranks.add_argument(
        "--workers",
        type=int,
        default=2,
        metavar="N",
        help="data-loading processes for large datasets (default 2)",
    )
    add_device_option(ranks)
    ranks.set_defaults(handler=_cmd_ranks)

    curves = kinds.add_parser(
        "curves",
        help="loss, learning rate, rank-1 and mAP of a training run against epoch",
        description="Plot a training run's metrics.jsonl: losses, learning rate (log scale) "
        "and, on evaluation epochs, rank-1 and mAP.",
    )
    curves.add_argument(
        "run", metavar="RUN_DIR_OR_METRICS_JSONL", help="run folder or its metrics.jsonl"
    )
    curves.add_argument("--output", required=True, metavar="PNG", help="figure to write")
    curves.set_defaults(handler=_cmd_curves)


def add_parsers(sub: Any) -> None:
    info = sub.add_parser(
        "info",
        help="parameters, multiply-adds and feature-map sizes of a model configuration",
        description="Print a configuration's parameter count, multiply-adds at its input size "
        "and the feature-map size after each stage.",
    )
    add_model_options(info)
    info.add_argument(
        "--variants",
        action="store_true",
        help="compare the four variants of the paper's table 5 (no SONA, 2, 3, 2+3)",
    )
    info.add_argument(
        "--baseline",
        action="store_true",
        help="add the plain ResNet-50 re-ID baseline at 256x128 for comparison",
    )
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(handler=_cmd_info)
    _add_export(sub)
    _add_viz(sub)
