"""``sona``: one entry point, a subcommand per job, dispatched to the group that owns it.

Each command imports what it needs when it runs, so ``sona --help`` stays instant and
``sona info`` never loads the service.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import (
    adapt_cmds,
    audit_cmds,
    footage_cmds,
    keys_cmds,
    model_cmds,
    reproduce_cmds,
    service_cmds,
    training_cmds,
)
from .errors import is_user_error
from .parser import SonaArgumentParser

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = SonaArgumentParser(
        prog="sona",
        description="SONA-Net person re-identification: model, training, gallery search.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    model_cmds.add_parsers(sub)
    training_cmds.add_parsers(sub)
    reproduce_cmds.add_parsers(sub)
    service_cmds.add_parsers(sub)
    footage_cmds.add_parsers(sub)
    keys_cmds.add_parsers(sub)
    audit_cmds.add_parsers(sub)
    adapt_cmds.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"sona {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not is_user_error(exc):
            raise  # a bug: its traceback is what a report needs
        print(f"sona {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
