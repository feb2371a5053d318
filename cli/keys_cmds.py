"""``sona keys add|list|revoke``: the API keys of a service, in its key file.

The running service re-reads the file when it changes: a key added or revoked here counts
from the service's next request, with no restart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .args import service_file
from .errors import UserError

__all__ = ["add_parsers", "keys_path"]


def keys_path(args: argparse.Namespace) -> Path:
    """--keys-file, else SONA_KEYS_FILE, else keys.json in --data-dir or SONA_DATA_DIR."""
    return service_file(args.keys_file, "SONA_KEYS_FILE", args.data_dir, "keys.json")


def _cmd_add(args: argparse.Namespace) -> int:
    from service.keys import KeyFileError, add_key

    path = keys_path(args)
    galleries = [g.strip() for value in args.gallery or () for g in value.split(",") if g.strip()]
    try:
        key = add_key(path, args.name, args.role, galleries or None)
    except (KeyFileError, OSError) as exc:
        raise UserError(str(exc)) from None
    print(key)
    scope = f"galleries {', '.join(sorted(set(galleries)))}" if galleries else "every gallery"
    print(
        f"key {args.name!r} ({args.role}, {scope}) added to {path}; this is the only time it "
        "is shown",
        file=sys.stderr,
    )
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from service.keys import KeyFileError, load_records

    try:
        records = load_records(keys_path(args))
    except KeyFileError as exc:
        raise UserError(str(exc)) from None
    rows = [("NAME", "ROLE", "GALLERIES", "CREATED", "STATUS")]
    for r in records:
        status = f"revoked {r.revoked}" if r.revoked else "active"
        rows.append((r.name, r.role, ",".join(r.galleries or ("*",)), r.created, status))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[4]]))
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    from service.keys import KeyFileError, revoke_key

    path = keys_path(args)
    try:
        revoke_key(path, args.name)
    except (KeyFileError, OSError) as exc:
        raise UserError(str(exc)) from None
    print(f"key {args.name!r} revoked in {path}; a running service refuses it from now on")
    return 0


def _file_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keys-file",
        metavar="PATH",
        help="key file (default: SONA_KEYS_FILE, else keys.json in the data folder)",
    )
    parser.add_argument("--data-dir", help="the service's data folder (SONA_DATA_DIR, ./data)")


def add_parsers(sub: Any) -> None:
    from service.keys import ROLES

    keys = sub.add_parser(
        "keys",
        help="add, list and revoke API keys (roles, galleries)",
        description="API keys with a role (search: embed, search, read items, images and "
        "tracks; ingest: and add crops; admin: everything, deletes and /metrics included) and "
        "optionally a set of galleries. The key file holds only hashes; a running service "
        "picks up changes without a restart.",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    add = keys_sub.add_parser(
        "add",
        help="make a key: printed once on stdout, only its hash is stored",
        description="Make a random key for NAME and print it (one line on stdout); the key "
        "file keeps its SHA-256 hash, role, galleries and creation time.",
    )
    add.add_argument("name", metavar="NAME", help="who or what uses the key (in the audit trail)")
    add.add_argument("--role", required=True, choices=ROLES, help="what the key may do")
    add.add_argument(
        "--gallery",
        action="append",
        metavar="G",
        help="limit the key to this gallery (repeat, or comma-separate); default: every gallery",
    )
    _file_options(add)
    add.set_defaults(handler=_cmd_add)
    listing = keys_sub.add_parser("list", help="the keys: name, role, galleries, created, status")
    _file_options(listing)
    listing.set_defaults(handler=_cmd_list)
    revoke = keys_sub.add_parser(
        "revoke", help="revoke a key: a running service refuses it at once"
    )
    revoke.add_argument("name", metavar="NAME")
    _file_options(revoke)
    revoke.set_defaults(handler=_cmd_revoke)
