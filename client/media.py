"""The one table of image file suffixes and media types.

Datasets, crop folders, the client's uploads, the service's decoder and the crop stores all
read it. It lives here, in a module with no dependencies, so that the client (which must not
load torch) and the model and service (which may) share it.
"""

from __future__ import annotations

__all__ = [
    "IMAGE_MEDIA_TYPES",
    "IMAGE_SUFFIXES",
    "UPLOAD_FORMATS",
    "UPLOAD_MEDIA_TYPES",
    "media_type_for",
    "suffix_for",
]

#: The image files this project reads, by suffix, with their media types.
IMAGE_MEDIA_TYPES: dict[str, str] = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}
IMAGE_SUFFIXES = frozenset(IMAGE_MEDIA_TYPES)

#: The formats the service accepts in an upload, by Pillow's name for them.
UPLOAD_FORMATS: dict[str, str] = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}

#: The files worth uploading: image suffixes whose format the service accepts.
UPLOAD_MEDIA_TYPES: dict[str, str] = {
    s: t for s, t in IMAGE_MEDIA_TYPES.items() if t in UPLOAD_FORMATS.values()
}


def suffix_for(media_type: str) -> str:
    """The file suffix for a media type (``image/jpeg`` -> ``.jpg``); ``.bin`` when unknown."""
    wanted = media_type.lower()
    return next((s for s, t in IMAGE_MEDIA_TYPES.items() if t == wanted), ".bin")


def media_type_for(filename: str) -> str:
    """The media type a file name's suffix says; ``application/octet-stream`` when unknown."""
    dot = filename.rfind(".")
    suffix = filename[dot:].lower() if dot >= 0 else ""
    return IMAGE_MEDIA_TYPES.get(suffix, "application/octet-stream")
