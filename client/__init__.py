"""The Python client of the service's HTTP API: typed calls with one retry policy, and uploads
of crop folders and footage tracks. It needs only ``httpx`` (and ``tqdm`` for a folder upload's
progress bar): neither torch nor the service's code, so a camera site or a script can use it
without the model.

The names below load their module on first use (PEP 562), so that ``client.media``, which the
model and the service read, costs no ``httpx`` import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports

if TYPE_CHECKING:
    from .api import (
        Embedding,
        Item,
        Match,
        SearchAnswer,
        SonaClient,
        SonaError,
        SonaUnreachable,
        Track,
    )
    from .folder import Crop, crops_from_csv, crops_from_folder, upload
    from .retry import RetryPolicy

_HOMES = {
    "Embedding": "api",
    "Item": "api",
    "Match": "api",
    "SearchAnswer": "api",
    "SonaClient": "api",
    "SonaError": "api",
    "SonaUnreachable": "api",
    "Track": "api",
    "Crop": "folder",
    "crops_from_csv": "folder",
    "crops_from_folder": "folder",
    "upload": "folder",
    "RetryPolicy": "retry",
}

__all__ = [
    "Crop",
    "Embedding",
    "Item",
    "Match",
    "RetryPolicy",
    "SearchAnswer",
    "SonaClient",
    "SonaError",
    "SonaUnreachable",
    "Track",
    "crops_from_csv",
    "crops_from_folder",
    "upload",
]


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
