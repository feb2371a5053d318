"""What ``make serve`` and ``make test`` install: disk size of the serving and dev closures.

Walks the installed distributions of this environment from ``sona-reid``'s requirements (with
no extra: what ``make serve`` installs; with ``dev``: what ``make test`` adds) and sums the
files each distribution's RECORD lists. Run it in an environment where the project is
installed with its ``dev`` extra:

    .venv/bin/python bench/venv_size.py
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def dist_size(dist: metadata.Distribution) -> int:
    total = 0
    for file in dist.files or ():
        path = Path(dist.locate_file(file))
        if path.is_file():
            total += path.stat().st_size
    return total


def closure(root: str, extras: set[str]) -> dict[str, metadata.Distribution]:
    """``root`` and everything its requirements (with ``extras``) pull in, as installed."""
    installed = {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}
    seen: dict[str, metadata.Distribution] = {}
    visited: set[tuple[str, frozenset[str]]] = set()
    todo = [(canonicalize_name(root), frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        dist = installed.get(name)
        if dist is None or (name, wanted) in visited:
            continue
        visited.add((name, wanted))
        seen[name] = dist
        for text in dist.requires or ():
            req = Requirement(text)
            env = {"extra": ""}
            active = req.marker is None or req.marker.evaluate(env)
            if not active and any(req.marker.evaluate({"extra": e}) for e in wanted):
                active = True
            if active:
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", default="sona-reid")
    parser.add_argument("--top", type=int, default=8, help="largest distributions listed")
    args = parser.parse_args()
    serve = closure(args.project, set())
    dev = closure(args.project, {"dev"})
    sizes = {name: dist_size(d) for name, d in dev.items()}
    base = sum(p.stat().st_size for p in Path(sys.prefix).rglob("*") if p.is_file())
    serve_total = sum(sizes[n] for n in serve)
    dev_total = sum(sizes.values())
    gib = 1024**3
    print(f"this environment: {base / gib:.2f} GiB on disk in all")
    print(f"make serve (no extra): {len(serve)} distributions, {serve_total / gib:.2f} GiB")
    print(f"make test (dev extra): {len(dev)} distributions, {dev_total / gib:.2f} GiB")
    print(f"dev-only: {(dev_total - serve_total) / gib:.2f} GiB; largest of the serving closure:")
    for name in sorted(serve, key=sizes.get, reverse=True)[: args.top]:
        print(f"  {name:28} {sizes[name] / gib:6.2f} GiB")
    print("largest dev-only:")
    for name in sorted(set(dev) - set(serve), key=sizes.get, reverse=True)[: args.top]:
        print(f"  {name:28} {sizes[name] / gib:6.2f} GiB")


if __name__ == "__main__":
    main()
