"""Uploaded image bytes -> validated RGB ``uint8 [3, H, W]``, or a clear refusal.

The service must feed the network exactly what training's evaluation feeds it, and training
decodes files with Pillow through ``model.preprocess.load_image``. So Pillow reads every header
and makes every decision, and pixels come out of the same ``model.preprocess.pil_to_tensor``
(EXIF orientation, transparency composited on black): a file embedded here and in ``sona eval``
gets the same pixels. Two exceptions, both for plain RGB or greyscale JPEGs (no EXIF rotation,
not CMYK), which simplejpeg decodes with the same libjpeg-turbo settings as Pillow and
identical pixels (checked once per process, and by the tests on a corpus): it is faster
(``bench/decode.py``), and when the caller names the size it needs, an upload at least four
times that size in each direction is decoded at a reduced DCT scale (1/2 to 1/8, still at least
twice the size needed) before the resize: a 4000 x 4000 JPEG then costs 1000 x 1000 pixels of
memory, not 16 million, at the price of pixels that differ slightly from a full decode. Other
images that large are box-reduced by Pillow right after decoding, for the same reason.

Everything is checked from the header before pixels are decoded: the format against an
allow-list (JPEG, PNG, WebP: by the bytes, never by a file name or a client's content type),
the declared size against explicit limits (decompression bombs), animation. Only then is the
image decoded, and any decoder complaint (truncation, bad checksums, broken streams) becomes an
``ImageError`` whose ``status``, ``code`` and ``detail`` the HTTP layer turns into a problem
response. Pillow's process-wide settings are never changed.

Decisions worth knowing:

- Trailing bytes after a complete JPEG or PNG (a ZIP appended, camera junk) are ignored: common,
  harmless, and the decoder never reads them. A file that starts like a JPEG but is not a valid
  one (e.g. an HTML page behind a JPEG signature) is ``CorruptImage``.
- PNG chunk checksums are verified through ``IEND`` (Pillow's own ``verify``), because Pillow's
  decoder skips the CRC of image data chunks and could otherwise accept flipped bits.
- 16-bit greyscale PNGs (mode ``I;16``) are scaled to 8 bits by keeping the high byte
  (``v >> 8``, i.e. ``floor(v / 256)``), the rule Pillow itself applies to 16-bit RGB, RGBA and
  greyscale-with-alpha PNGs; Pillow's ``convert("RGB")`` would clip every value above 255 to
  white instead.
- An MPO file (a JPEG carrying extra pictures, as some cameras write) is its first picture,
  which is the primary image; animated PNG (APNG) and WebP are refused rather than silently
  reduced to their first frame.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from io import BytesIO
from typing import ClassVar, Literal

import numpy as np
import simplejpeg
import torch
from PIL import Image, ImageFile, ImageOps

from client.media import UPLOAD_FORMATS
from model.preprocess import pil_to_tensor, resize

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
    "DEFAULT_MIN_SIDE",
    "MEDIA_TYPES",
    "AnimatedImage",
    "CorruptImage",
    "DecodedImage",
    "EmptyImage",
    "ImageError",
    "ImageTooLarge",
    "ImageTooSmall",
    "UnsupportedImageType",
    "decode_image",
]

# Pedestrian crops are a few hundred pixels high; these bound a decode to ~48 MB of RGB.
DEFAULT_MAX_SIDE = 4096
DEFAULT_MAX_PIXELS = 16_000_000
DEFAULT_MIN_SIDE = 8

MEDIA_TYPES = UPLOAD_FORMATS  # the formats an upload may have, by Pillow's name

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Formats Pillow is asked to name when an upload is refused (only ones with a real signature,
# so random bytes are not reported as, say, TGA).
_NAMED_BY_PILLOW = (
    "GIF", "BMP", "DIB", "TIFF", "ICO", "CUR", "AVIF", "JPEG2000", "PSD", "PPM", "QOI", "DDS",
    "EPS", "ICNS", "XBM", "XPM", "SGI", "FLI",
)  # fmt: skip
_ORIENTATION = 0x0112  # EXIF tag
_ROTATIONS = range(2, 9)  # orientations that make pil_to_tensor transpose the image
_MAX_REASON = 200  # characters of a decoder's own message quoted in a refusal


class ImageError(ValueError):
    """An upload that is not an acceptable image; ``status`` is the HTTP status to answer."""

    status: ClassVar[int] = 422
    code: ClassVar[str] = "invalid-image"
    title: ClassVar[str] = "Invalid image"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class EmptyImage(ImageError):
    status = 400
    code = "empty-image"
    title = "Empty image"


class UnsupportedImageType(ImageError):
    status = 415
    code = "unsupported-image-type"
    title = "Unsupported image type"

    def __init__(self, detail: str, detected: str | None = None) -> None:
        super().__init__(detail)
        self.detected = detected  # e.g. "GIF", "SVG", "text"; None when unrecognised


class CorruptImage(ImageError):
    status = 422
    code = "corrupt-image"
    title = "Corrupt image"


class ImageTooLarge(ImageError):
    # 413 like the upload byte cap: "too large" is one thing for a client to handle, whether
    # it is the bytes or the pixels they declare.
    status = 413
    code = "image-too-large"
    title = "Image too large"


class ImageTooSmall(ImageError):
    status = 422
    code = "image-too-small"
    title = "Image too small"


class AnimatedImage(ImageError):
    status = 422
    code = "animated-image"
    title = "Animated image"


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """A validated upload: RGB ``uint8 [3, height, width]`` pixels, after EXIF orientation."""

    pixels: torch.Tensor
    format: str  # "JPEG", "PNG" or "WEBP", from the bytes
    media_type: str  # "image/jpeg", "image/png" or "image/webp"
    width: int
    height: int


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
    min_side: int = DEFAULT_MIN_SIDE,
    decoder: Literal["auto", "pillow"] = "auto",
    size: tuple[int, int] | None = None,
    reserve: Callable[[int], contextlib.AbstractContextManager[object]] | None = None,
) -> DecodedImage:
    """Validate and decode one uploaded JPEG, PNG or WebP image.

    Raises an ``ImageError`` subclass for anything that is not an acceptable still image within
    the limits (``max_side`` and ``min_side`` per side, ``max_pixels`` in all, checked on the
    declared size before any pixel is decoded). Pixels equal ``model.preprocess.load_image`` on
    the same bytes, except that 16-bit greyscale is scaled instead of clipped. ``decoder``
    "auto" lets simplejpeg decode plain JPEGs (same pixels, faster); "pillow" never does.

    ``size`` (height, width): return the pixels resized to it, so the full-size pixels live
    only inside this call (and large JPEGs are decoded at a reduced scale, see the module doc);
    ``width`` and ``height`` still give the upload's own size. ``reserve(pixels)``: a context
    manager entered with the declared pixel count before anything is decoded and left once the
    full-size pixels are gone, for a budget of decoded pixels in flight; it may raise to refuse.
    """
    if decoder not in ("auto", "pillow"):
        raise ValueError(f"decoder must be 'auto' or 'pillow', not {decoder!r}")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Pillow would grey-fill truncated uploads into the gallery. This is a bug in the
        # process (some code set the global), not in the upload, so fail loudly.
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process; "
            "refusing to decode uploads, which would accept truncated images"
        )
    if not isinstance(data, bytes):
        data = bytes(data)
    if not data:
        raise EmptyImage("The image is empty (0 bytes).")
    fmt = _sniff(data)
    if fmt is None:
        detected = _describe(data)
        raise UnsupportedImageType(
            f"The upload is {_phrase(detected)}; only JPEG, PNG and WebP images are accepted.",
            detected,
        )
    if (declared := _declared_size(fmt, data)) is not None:
        # For WebP this matters (libwebp allocates its canvas when Pillow opens the file); for
        # PNG it names the size where Pillow's own bomb check would refuse first, anonymously.
        _check_size(*declared, max_pixels=max_pixels, max_side=max_side, min_side=min_side)

    try:
        image = Image.open(BytesIO(data), formats=[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's process-wide check (2 x Image.MAX_IMAGE_PIXELS, or 1 x where warnings are
        # errors) fired before ours could: a JPEG declaring an enormous size.
        raise _too_large(None, max_pixels=max_pixels, max_side=max_side) from exc
    except Exception as exc:  # any parser failure on hostile bytes
        raise _corrupt(fmt, exc) from exc

    with image:
        _check_size(*image.size, max_pixels=max_pixels, max_side=max_side, min_side=min_side)
        frames = getattr(image, "n_frames", 1)
        if frames > 1 and image.format != "MPO":
            raise AnimatedImage(
                f"The {_name(fmt)} image is animated ({frames} frames); only still images are "
                "accepted, so send a single frame."
            )
        budget = reserve(image.size[0] * image.size[1]) if reserve else contextlib.nullcontext()
        with budget:
            try:
                pixels = _fast_jpeg(data, image, size) if decoder == "auto" else None
                if pixels is None:
                    if fmt == "JPEG":
                        _check_jpeg(data, image)  # strict, as the fast path: no grey-filling
                    if fmt == "PNG":
                        _verify_png(data)
                    image.load()
                    ImageOps.exif_transpose(image, in_place=True)  # no copy of the pixels
                    width, height = image.size
                    pixels = pil_to_tensor(_reduced(image, size))
                else:  # no rotation on this path; the pixels may be at a reduced scale
                    width, height = image.size
            except Exception as exc:  # truncation, checksums, broken streams, bad EXIF
                raise _corrupt(fmt, exc) from exc
            if size is not None:
                pixels = resize(pixels, size).contiguous()  # the full-size pixels go here

    return DecodedImage(
        pixels=pixels,
        format=fmt,
        media_type=MEDIA_TYPES[fmt],
        width=int(width),
        height=int(height),
    )


def _sniff(data: bytes) -> str | None:
    """The accepted format the bytes start with, by signature alone."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(_PNG_SIGNATURE):
        return "PNG"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _describe(data: bytes) -> str | None:
    """A short name for what a refused upload is, for the message; None if unrecognised."""
    with contextlib.suppress(Exception):  # naming is best effort; the upload is refused anyway
        Image.init()
        formats = [name for name in _NAMED_BY_PILLOW if name in Image.OPEN]
        with Image.open(BytesIO(data), formats=formats) as image:  # header only
            return image.format
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"hevc", b"mif1", b"msf1"):
        return "HEIF"
    for signature, name in (
        (b"GIF8", "GIF"),  # when Pillow could not parse the rest of the header
        (b"II*\x00", "TIFF"),
        (b"MM\x00*", "TIFF"),
        (b"%PDF-", "PDF"),
        (b"PK\x03\x04", "ZIP archive"),
        (b"\x1f\x8b", "gzip stream"),
        (b"RIFF", "RIFF"),
    ):
        if data.startswith(signature):
            return name
    head = data[:1024]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not merely a character cut at the end
            return None
        text = head[: exc.start].decode("utf-8")
    if not text or any(ord(c) < 32 and c not in "\t\r\n\f" for c in text):
        return None
    lowered = text.lstrip("\ufeff \t\r\n").lower()
    if "<svg" in lowered:
        return "SVG"
    if lowered.startswith(("<!doctype html", "<html")) or "<script" in lowered:
        return "HTML"
    if lowered.startswith("<"):
        return "XML"
    return "text"


_PHRASES = {
    "text": "plain text",
    "SVG": "an SVG document",
    "HTML": "an HTML document",
    "XML": "an XML document",
    "PDF": "a PDF document",
    "ZIP archive": "a ZIP archive",
    "gzip stream": "a gzip stream",
    "RIFF": "a RIFF file that is not WebP",
}


def _phrase(detected: str | None) -> str:
    """'a GIF image', 'an SVG document', 'plain text', ... for a refusal message."""
    if detected is None:
        return "not a recognised image format"
    if detected in _PHRASES:
        return _PHRASES[detected]
    article = "an" if detected[0] in "AEFHILMNORSX" else "a"  # by letter name: an ICO, a GIF
    return f"{article} {detected} image"


def _name(fmt: str) -> str:
    return "WebP" if fmt == "WEBP" else fmt


def _declared_size(fmt: str, data: bytes) -> tuple[int, int] | None:
    """(width, height) as a PNG or WebP header declares it, read without Pillow."""
    if fmt == "PNG" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if fmt == "WEBP":
        return _webp_canvas_size(data)
    return None


def _webp_canvas_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a WebP header without decoding, as Pillow's plugin reads it."""
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width = int.from_bytes(data[26:28], "little") & 0x3FFF
        height = int.from_bytes(data[28:30], "little") & 0x3FFF
        return width, height
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _check_size(width: int, height: int, *, max_pixels: int, max_side: int, min_side: int) -> None:
    if width > max_side or height > max_side or width * height > max_pixels:
        raise _too_large((width, height), max_pixels=max_pixels, max_side=max_side)
    if width < min_side or height < min_side:
        raise ImageTooSmall(
            f"The image is {width} x {height} pixels (width x height); each side must be at "
            f"least {min_side} pixels."
        )


def _too_large(size: tuple[int, int] | None, *, max_pixels: int, max_side: int) -> ImageTooLarge:
    limits = f"the limit is {max_side} pixels a side and {max_pixels} pixels in all"
    if size is None:
        return ImageTooLarge(
            f"The image declares a size too large to decode (a possible decompression bomb); "
            f"{limits}."
        )
    width, height = size
    return ImageTooLarge(
        f"The image is {width} x {height} pixels (width x height), {width * height} pixels; "
        f"{limits}."
    )


def _corrupt(fmt: str, exc: BaseException) -> CorruptImage:
    if isinstance(exc, Image.UnidentifiedImageError):  # its message names a BytesIO object
        reason = f"its header is not a valid {_name(fmt)} header"
    else:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        reason = re.sub(r"\bb'([^']*)'", r"\1", reason)[:_MAX_REASON].rstrip(".")  # b'IDAT'
    return CorruptImage(
        f"The {_name(fmt)} image is corrupt or truncated and cannot be decoded: {reason}."
    )


def _reduced(image: Image.Image, size: tuple[int, int] | None) -> Image.Image:
    """With ``size``, an image at least 4x larger in both directions box-averaged by Pillow
    (in C, on the decoded image) to at least 2x ``size``, before it becomes a tensor: the
    float and RGB copies of 16 million pixels are never made."""
    if size is None or image.mode not in ("L", "RGB", "RGBA"):
        return image
    factor = min(image.height // (2 * size[0]), image.width // (2 * size[1]))
    return image.reduce(factor) if factor >= 2 else image


def _check_jpeg(data: bytes, image: Image.Image) -> None:
    """Decode the entropy-coded data strictly (at 1/8 scale: the whole scan is still read) and
    raise on any libjpeg warning, e.g. a scan cut short by an early EOI marker."""
    colorspace = "CMYK" if image.mode == "CMYK" else "GRAY" if image.mode == "L" else "RGB"
    simplejpeg.decode_jpeg(data, colorspace=colorspace, min_factor=8, strict=True)


def _fast_jpeg(
    data: bytes, image: Image.Image, size: tuple[int, int] | None
) -> torch.Tensor | None:
    """simplejpeg's decode of a plain JPEG, or None where Pillow must decode it.

    Only for baseline/progressive RGB or greyscale JPEGs without an EXIF rotation: there both
    decoders run libjpeg-turbo with the same settings (accurate integer IDCT, fancy
    upsampling) and give identical pixels, which ``_simplejpeg_equal`` checks once per process
    and the tests check on a corpus and on randomly damaged files. CMYK, MPO and rotated files
    stay on Pillow's path, and so does any file simplejpeg fails on: its refusals are Pillow's.
    With ``size``, an image at least 4x larger in both directions is decoded at the largest DCT
    scale that keeps it at least 2x ``size``.
    """
    if image.format != "JPEG" or image.mode not in ("RGB", "L"):
        return None
    if image.getexif().get(_ORIENTATION, 1) in _ROTATIONS:
        return None
    if not _simplejpeg_equal():
        return None
    min_height = min_width = 0
    if size is not None and image.height >= 4 * size[0] and image.width >= 4 * size[1]:
        min_height, min_width = 2 * size[0], 2 * size[1]
    try:
        array = simplejpeg.decode_jpeg(
            data,
            colorspace="RGB",
            fastdct=False,
            fastupsample=False,
            min_height=min_height,
            min_width=min_width,
            strict=True,
        )
    except Exception:  # any refusal is Pillow's to make, with its message
        return None
    pixels = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    if not min_height and tuple(pixels.shape) != (3, image.height, image.width):
        return None
    return pixels


@cache
def _simplejpeg_equal() -> bool:
    """Whether simplejpeg gives Pillow's pixels on a probe image (else Pillow decodes all)."""
    try:
        y, x = np.mgrid[0:24, 0:40]
        probe = np.stack([x * 6, y * 10, (x * y) % 256], axis=-1).astype(np.uint8)
        buffer = BytesIO()
        Image.fromarray(probe).save(buffer, "JPEG", quality=90)
        with Image.open(BytesIO(buffer.getvalue())) as reference:
            expected = pil_to_tensor(reference)
        got = simplejpeg.decode_jpeg(
            buffer.getvalue(), colorspace="RGB", fastdct=False, fastupsample=False
        )
        return torch.equal(torch.from_numpy(got).permute(2, 0, 1), expected)
    except Exception:  # no usable simplejpeg: Pillow decodes everything
        return False


def _verify_png(data: bytes) -> None:
    """Check every chunk's CRC through IEND: Pillow's decoder skips image-data checksums."""
    with Image.open(BytesIO(data), formats=["PNG"]) as probe:
        probe.verify()
