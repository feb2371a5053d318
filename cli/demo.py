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


def preparation(settings: Settings, args: argparse.Namespace, store: GalleryStore) -> Preparation:
    """The demo built while the port is already open (``store`` opened before), then its
    model, and its gallery indexed through the API once the service is ready."""
    from service.runtime import load_model
    from service.startup import Preparation

    def work(progress: Progress) -> tuple[Settings, LoadedModel, GalleryStore]:
        demo = build(settings, args, progress)
        ready = settings.model_copy(update={"checkpoint": demo.checkpoint})
        progress.set("loading the model and the gallery")
        model = load_model(ready)
        if model.encoder.dim != store.dim:  # the store opened for the tiny preset's vectors
            raise RuntimeError(f"the demo model embeds {model.encoder.dim}-d, not {store.dim}")
        index_in_background(demo, args, ready)
        return ready, model, store

    return Preparation(work)


def index_in_background(demo: Demo, args: argparse.Namespace, settings: Settings) -> None:
    """Index the demo gallery once the server answers, without holding up its start."""
    threading.Thread(target=_index, args=(demo, args, settings), daemon=True).start()


def _index(demo: Demo, args: argparse.Namespace, settings: Settings) -> None:
    """Once the server is ready, index the synthetic gallery through POST /gallery (once)."""
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
