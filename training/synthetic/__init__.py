"""A procedural pedestrian dataset in the Market-1501 layout, for tests and demos.

Real re-ID data needs a download and a licence; tests and demos need something that is
generated in seconds and still measures learning. Each identity is a seeded set of clothing,
body and accessory parameters, each camera a seeded scene, illumination, colour cast, viewpoint
mix, framing, blur and occlusion rate. Identity cues survive across cameras only in
combination (colours come from a palette with near-duplicates, logos show only from the front,
backpacks mostly from the back), so raw pixels match poorly across cameras while a network that
learns the cues and discounts the camera does well.

Every image is drawn from its own random stream keyed by (seed, identity, camera, index), so the
output is the same bytes for a given seed on a given machine, independent of rendering order.
"""

from .dataset import (
    FORMAT,
    METADATA_FILE,
    SPLITS,
    SyntheticSummary,
    is_complete,
    make_dataset,
    read_metadata,
)

__all__ = [
    "FORMAT",
    "METADATA_FILE",
    "SPLITS",
    "SyntheticSummary",
    "is_complete",
    "make_dataset",
    "read_metadata",
]
