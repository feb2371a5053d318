"""The Python client of the service's HTTP API: typed calls with one retry policy, and uploads
of crop folders and footage tracks. It needs only ``httpx`` (and ``tqdm`` for a folder upload's
progress bar): neither torch nor the service's code, so a camera site or a script can use it
without the model."""

from .api import Embedding, Item, Match, SearchAnswer, SonaClient, SonaError, SonaUnreachable, Track
from .folder import Crop, crops_from_csv, crops_from_folder, upload
from .retry import RetryPolicy

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
