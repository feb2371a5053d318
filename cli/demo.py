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
    import time
    from datetime import UTC, datetime

    import httpx

    from service.client import crops_from_folder, upload

    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    url = f"http://{host}:{args.port}"
    key = settings.keys[0].decode() if settings.keys else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    for _ in range(600):
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    else:
        return
    counts = httpx.get(f"{url}/gallery", headers=headers, timeout=30).json()
    if not any(g["gallery"] == "default" for g in counts.get("galleries", [])):
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
