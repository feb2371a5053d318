"""The ``sona`` command line: one entry point, a subcommand per job.

Each subcommand imports what it needs when it runs, so ``sona --help`` stays instant and
``sona info`` never loads the service.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def _input_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HEIGHTxWIDTH such as 384x128, got {text!r}"
        ) from None
    return height, width


def _stages(text: str) -> tuple[int, ...]:
    if text.lower() in ("", "none"):
        return ()
    try:
        return tuple(int(v) for v in text.replace("+", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected stages such as 2,3 or none, got {text!r}"
        ) from None


def _model_config(args: argparse.Namespace):
    """The configuration named by --checkpoint or --preset, with any explicit overrides."""
    from model import PRESETS, SONANetConfig
    from model.checkpoint import read_checkpoint

    if args.checkpoint:
        config = SONANetConfig.from_dict(read_checkpoint(args.checkpoint)["config"])
    else:
        config = PRESETS[args.preset]
    overrides = {
        "depth": args.depth,
        "sona_stages": args.sona_stages,
        "input_size": args.input,
        "num_classes": args.num_classes,
    }
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


def _add_model_options(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--depth", type=int, choices=[18, 34, 50], help="ResNet depth")
    parser.add_argument(
        "--sona-stages",
        type=_stages,
        metavar="STAGES",
        help="where SONA is injected: 2, 3, 2,3 or none",
    )
    parser.add_argument("--input", type=_input_size, metavar="HxW", help="input size, e.g. 384x128")
    parser.add_argument(
        "--num-classes",
        type=int,
        metavar="N",
        help="training identities (classifier width; 0 for none)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sona",
        description="SONA-Net person re-identification: model, training, gallery search.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    info = sub.add_parser(
        "info",
        help="parameters, multiply-adds and feature-map sizes of a model configuration",
        description="Print a configuration's parameter count, multiply-adds at its input size "
        "and the feature-map size after each stage.",
    )
    _add_model_options(info)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as exc:
        # Configuration and file errors are the user's to fix: one line, no traceback.
        print(f"sona {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
