"""``sona footage add --sites cameras.csv`` (or several ``--camera C=SOURCE``): a site's
cameras, each in its own worker process, at most ``--workers`` at once."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from .errors import UserError

__all__ = ["run_site"]


def _worker(args: argparse.Namespace, one_camera: Callable[[argparse.Namespace], int]) -> None:
    """One camera in its own process: its one-line error, or its summary, and its status."""
    try:
        code = one_camera(args)
    except (UserError, ValueError) as exc:
        print(f"sona footage: camera {args.camera}: {exc}", file=sys.stderr, flush=True)
        code = 2
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # one line per camera, never a traceback over the others' bars
        print(f"sona footage: camera {args.camera}: {exc!r}", file=sys.stderr, flush=True)
        code = 1
    sys.exit(code)


def _checked_start(camera: str, start: str | None) -> None:
    if start is None:
        raise UserError(f"camera {camera}: a file or folder needs a start time")
    try:
        when = datetime.fromisoformat(start)
    except ValueError:
        raise UserError(f"camera {camera}: start {start!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise UserError(f"camera {camera}: start {start!r} needs the camera's UTC offset")


def run_site(args: argparse.Namespace, one_camera: Callable[[argparse.Namespace], int]) -> int:
    from footage.live import is_stream
    from footage.site import parse_cameras, read_sites

    if args.sites and (args.video or args.camera):
        raise UserError("--sites lists the cameras: give no VIDEO and no --camera with it")
    if not args.sites and not args.camera:
        raise UserError("give VIDEO and --camera, --sites CSV, or --camera CAMERA=SOURCE ...")
    if args.state:
        raise UserError("--state names one camera's file; a site keeps one per camera")
    cameras = read_sites(Path(args.sites)) if args.sites else parse_cameras(args.camera, args.start)
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise UserError("--workers must be at least 1")
    streams = [c for c in cameras if is_stream(c.source)]
    if len(streams) > workers:
        raise UserError(
            f"{len(streams)} live streams need {len(streams)} workers (each runs until "
            f"stopped): give --workers {len(streams)} or more"
        )
    for cam in cameras:
        if not is_stream(cam.source):
            _checked_start(cam.camera_id, cam.start)
            if not Path(cam.source).exists():
                raise UserError(f"camera {cam.camera_id}: {cam.source}: no such file or folder")
    jobs = [
        argparse.Namespace(
            **{
                **vars(args),
                "video": cam.source,
                "camera": cam.camera_id,
                "start": None if is_stream(cam.source) else cam.start,
                "sites": None,
                "position": n,
            }
        )
        for n, cam in enumerate(cameras)
    ]
    context = multiprocessing.get_context("spawn")  # no threads or locks inherited mid-use
    pending = list(jobs)
    pending.sort(key=lambda j: not is_stream(j.video))  # streams first: they never end
    running: dict[str, multiprocessing.process.BaseProcess] = {}
    codes: dict[str, int] = {}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in running.values():
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signal.SIGTERM)  # streams send their open tracks and end

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while pending or running:
            while pending and len(running) < workers and not stopping:
                job = pending.pop(0)
                proc = context.Process(target=_worker, args=(job, one_camera), name=job.camera)
                proc.start()
                running[job.camera] = proc
            for name, proc in list(running.items()):
                if not proc.is_alive():
                    proc.join()
                    codes[name] = proc.exitcode if proc.exitcode is not None else 1
                    del running[name]
            if stopping:
                pending.clear()
            time.sleep(0.2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    failed = {n: c for n, c in codes.items() if c != 0}
    print(
        f"site: {len(cameras)} cameras, {len(codes) - len(failed)} done"
        + (f", failed: {', '.join(sorted(failed))}" if failed else "")
        + (", stopped" if stopping else "")
    )
    if not failed:
        return 0
    return 2 if all(c == 2 for c in failed.values()) else 1
