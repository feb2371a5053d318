"""``sona audit``: the audit trail's records, filtered by key, item, gallery and time."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from .args import service_file
from .errors import UserError

__all__ = ["add_parsers"]


def _time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time, got {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. +00:00 or Z")
    return value


def _log_path(args: argparse.Namespace) -> Path:
    return service_file(args.log, "SONA_AUDIT_LOG", args.data_dir, "audit.log")


def _cmd_audit(args: argparse.Namespace) -> int:
    from service.audit_read import AuditQuery, audit_files, read_audit

    path = _log_path(args)
    if not audit_files(path):
        raise UserError(f"no audit trail at {path} (set --log or SONA_AUDIT_LOG)")
    query = AuditQuery(
        key=args.key, item=args.item, gallery=args.gallery, since=args.since, until=args.until
    )
    try:
        for record in read_audit(path, query):
            print(json.dumps(record, separators=(",", ":")))
    except BrokenPipeError:  # | head
        sys.stderr.close()
        return 0
    if query.torn:
        print(f"sona audit: skipped {query.torn} incomplete line(s)", file=sys.stderr)
    return 0


def add_parsers(sub: Any) -> None:
    audit = sub.add_parser(
        "audit",
        help="read the audit trail (who searched, read, added or deleted what)",
        description="Print the audit trail's records (one JSON object a line, oldest first, "
        "rotated files included) that match every filter given.",
    )
    audit.add_argument(
        "--log",
        metavar="PATH",
        help="audit log (default: SONA_AUDIT_LOG, else audit.log in the data folder)",
    )
    audit.add_argument("--data-dir", help="the service's data folder (SONA_DATA_DIR, ./data)")
    audit.add_argument("--key", metavar="NAME", help="only this key's requests")
    audit.add_argument("--item", metavar="ID", help="only requests that returned or wrote it")
    audit.add_argument("--gallery", metavar="G", help="only requests on this gallery")
    audit.add_argument("--since", type=_time, metavar="T", help="from this time (ISO 8601)")
    audit.add_argument("--until", type=_time, metavar="T", help="up to this time (ISO 8601)")
    audit.set_defaults(handler=_cmd_audit)
