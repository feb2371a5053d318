"""The demo behind ``sona serve`` without a checkpoint: build it, then index its gallery."""

from __future__ import annotations

import argparse
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.settings import Settings
    from training.demo import Demo

__all__ = ["build", "index_in_background"]


def build(settings: Settings, args: argparse.Namespace) -> Demo:
    """Make (or reuse) the demo model and dataset under ``<data_dir>/demo``."""
    from training.demo import build_demo

    print("no SONA_CHECKPOINT: serving the DEMO (a tiny model trained on synthetic data)")
    return build_demo(
        settings.data_dir / "demo", identities=args.demo_identities, epochs=args.demo_epochs
    )


def index_in_background(demo: Demo, args: argparse.Namespace, settings: Settings) -> None:
    """Index the demo gallery once the server answers, without holding up its start."""
    threading.Thread(target=_index, args=(demo, args, settings), daemon=True).start()


def _index(demo: Demo, args: argparse.Namespace, settings: Settings) -> None:
    """Once the server is ready, index the synthetic gallery through POST /gallery (once)."""
    from datetime import UTC, datetime

    from service.client import crops_from_folder, upload
    from service.sona_client import SonaClient, SonaError

    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    url = f"http://{host}:{args.port}"
    key = settings.keys[0].decode() if settings.keys else None
    # until the server is ready: 503 (with Retry-After) or no connection yet, both retried
    with SonaClient(url, api_key=key, retries=600, backoff_s=0.5, max_wait_s=1) as client:
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
