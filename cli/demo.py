"""The demo behind ``sona serve`` without a checkpoint: build it, then index its gallery."""

from __future__ import annotations

import argparse
import re
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model.loading import LoadedModel
    from service.settings import Settings
    from service.startup import Preparation, Progress
    from service.store import GalleryStore
    from training.demo import Demo

    from .demo_footage import FootageDemo

__all__ = ["build", "index_in_background", "preparation"]

EPOCH = re.compile(r"epoch (\d+)/(\d+)\b")


def build(settings: Settings, args: argparse.Namespace, progress: Progress | None = None) -> Demo:
    """Make (or reuse) the demo model and dataset under ``<data_dir>/demo``; its log lines
    also move ``progress`` (stage, and the share of the epochs done)."""
    from training.demo import build_demo

    def log(line: str) -> None:
        print(line, flush=True)
        if progress is None:
            return
        if line.startswith("demo: writing"):
            progress.set("writing the synthetic demo dataset")
        elif line.startswith("demo: training"):
            progress.set("training the demo model", 0.0)
        elif found := EPOCH.match(line):
            progress.set("training the demo model", int(found[1]) / int(found[2]))

    print("no SONA_CHECKPOINT: serving the DEMO (a tiny model trained on synthetic data)")
    return build_demo(
        settings.data_dir / "demo",
        identities=args.demo_identities,
        epochs=args.demo_epochs,
        log=log,
    )


def preparation(
    settings: Settings,
    args: argparse.Namespace,
    store: GalleryStore,
    footage: FootageDemo | None = None,
) -> Preparation:
    """The demo built while the port is already open (``store`` opened before), then its
    model, and its gallery indexed through the API once the service is ready. With
    ``footage``, the model is the demo's adapted to that clip, and the gallery is the clip's."""
    from service.runtime import load_model
    from service.startup import Preparation

    def work(progress: Progress) -> tuple[Settings, LoadedModel, GalleryStore]:
        demo = build(settings, args, progress)
        checkpoint = demo.checkpoint
        if footage is not None:
            from .demo_footage import adapt_demo

            checkpoint = adapt_demo(footage, demo, _print, progress.set)
        ready = settings.model_copy(update={"checkpoint": checkpoint})
        progress.set("loading the model and the gallery")
        model = load_model(ready)
        if model.encoder.dim != store.dim:  # the store opened for the tiny preset's vectors
            raise RuntimeError(f"the demo model embeds {model.encoder.dim}-d, not {store.dim}")
        index_in_background(demo, args, ready, footage)
        return ready, model, store

    return Preparation(work)


def _print(line: str) -> None:
    print(line, flush=True)


def index_in_background(
    demo: Demo, args: argparse.Namespace, settings: Settings, footage: FootageDemo | None = None
) -> None:
    """Index the demo gallery once the server answers, without holding up its start."""
    threading.Thread(target=_index, args=(demo, args, settings, footage), daemon=True).start()


def _index(
    demo: Demo, args: argparse.Namespace, settings: Settings, footage: FootageDemo | None
) -> None:
    """Once the server is ready, index the synthetic gallery through POST /gallery (once), or
    the footage's tracks (resumed where a previous start left them)."""
    from datetime import UTC, datetime

    from client import SonaClient, SonaError, crops_from_folder, upload

    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    url = f"http://{host}:{args.port}"
    key = settings.keys[0].decode() if settings.keys else None
    # until the server is ready: 503 (with Retry-After) or no connection yet, both retried
    with SonaClient(url, api_key=key, retries=3600, backoff_s=0.5, max_wait_s=1) as client:
        try:
            client.ready()
            counts = client.counts()
        except SonaError:
            return
    if footage is not None:
        _index_footage(footage, url, key)
        return
    if "default" not in counts:
        crops = crops_from_folder(
            demo.gallery_folder, start=datetime(2024, 1, 1, tzinfo=UTC), with_identity=True
        )
        added, errors = upload(crops, url, api_key=key, progress=False)
        print(
            f"demo: indexed {added} synthetic gallery crops into gallery 'default'"
            + (f" ({len(errors)} batches failed: {errors[0]})" if errors else "")
        )
    print(
        f"\nSONA DEMO ready at {url}  (tiny model trained on synthetic data: a demo, not a "
        f"real re-ID model)\n  API docs: {url}/docs\n  try:     curl -F "
        f"image=@{demo.example_query()} '{url}/search?k=5&group_by=identity'\n",
        flush=True,
    )


def _index_footage(footage: FootageDemo, url: str, key: str | None) -> None:
    from .demo_footage import index_footage
    from .errors import is_user_error

    try:
        index_footage(footage, url, key)
    except Exception as exc:  # the service goes on serving what was indexed
        if not is_user_error(exc):
            raise
        print(f"demo: indexing {footage.footage} failed: {exc}", flush=True)
        return
    print(
        f"\nSONA DEMO ready at {url}  (tiny model trained on synthetic data, adapted to "
        f"{footage.footage.name} without labels: a demo, not a real re-ID model)\n"
        f"  gallery 'default': the tracks of {footage.footage.name}, with their provenance\n"
        f"  API docs: {url}/docs\n  try:     curl -F image=@{footage.example_query()} "
        f"'{url}/search?k=5&group_by=track'\n",
        flush=True,
    )
