"""service.imaging on a hostile corpus the tests generate themselves with Pillow and numpy.

Accepted images must come out exactly as ``model.preprocess.load_image`` gives them from a file
(the one-path guarantee: the service embeds what training evaluated); everything else must be
refused with the right ``ImageError`` subclass, HTTP status and a clear sentence, before any
pixel is decoded where the header already tells.
"""

from __future__ import annotations

import contextlib
import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from model.preprocess import load_image, resize
from service import imaging
from service.imaging import (
    AnimatedImage,
    CorruptImage,
    DecodedImage,
    EmptyImage,
    ImageError,
    ImageTooLarge,
    ImageTooSmall,
    UnsupportedImageType,
    decode_image,
)

# ---------------------------------------------------------------------------------------------
# The corpus


def picture(height: int = 48, width: int = 24, seed: int = 0) -> np.ndarray:
    """An RGB crop-like array: gradients, a block of colour, noise (so the codecs work)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, (x + y) * 4 % 256], axis=-1)
    image[height // 4 : height // 2, width // 4 : width // 2] = (200, 30, 60)
    image = image + rng.integers(0, 24, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def rgb(height: int = 48, width: int = 24) -> Image.Image:
    return Image.fromarray(picture(height, width))


def rgba() -> Image.Image:
    alpha = np.tile(np.linspace(0, 255, 24, dtype=np.uint8), (48, 1))
    return Image.fromarray(np.dstack([picture(), alpha]))


def exif_with_orientation(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_by_hand(
    width: int, height: int, bit_depth: int, colour_type: int, idat: bytes = b""
) -> bytes:
    """A PNG from raw parts, to declare sizes and depths Pillow would not write for us."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def rgb48_png() -> bytes:
    """16 bits a channel RGB: Pillow keeps the high byte of each sample."""
    samples = (np.arange(16 * 8 * 3).reshape(16, 8, 3) * 677 % 65536).astype(">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in samples)
    return png_by_hand(8, 16, 16, 2, zlib.compress(raw))


def mpo() -> bytes:
    frames = [rgb(), Image.fromarray(picture(seed=1))]
    return encode(frames[0], "MPO", save_all=True, append_images=frames[1:])


ACCEPTED: dict[str, tuple[Callable[[], bytes], str]] = {
    "jpeg-rgb-420": (lambda: encode(rgb(), "JPEG", quality=90), "JPEG"),
    "jpeg-rgb-444": (lambda: encode(rgb(), "JPEG", quality=95, subsampling=0), "JPEG"),
    "jpeg-rgb-422": (lambda: encode(rgb(), "JPEG", subsampling=1), "JPEG"),
    "jpeg-progressive": (lambda: encode(rgb(), "JPEG", progressive=True), "JPEG"),
    "jpeg-odd-size": (lambda: encode(rgb(37, 23), "JPEG"), "JPEG"),
    "jpeg-grey": (lambda: encode(rgb().convert("L"), "JPEG"), "JPEG"),
    "jpeg-cmyk": (lambda: encode(rgb().convert("CMYK"), "JPEG"), "JPEG"),
    "jpeg-mpo": (mpo, "JPEG"),
    "png-rgb": (lambda: encode(rgb(), "PNG"), "PNG"),
    "png-rgba": (lambda: encode(rgba(), "PNG"), "PNG"),
    "png-la": (lambda: encode(rgba().convert("LA"), "PNG"), "PNG"),
    "png-l": (lambda: encode(rgb().convert("L"), "PNG"), "PNG"),
    "png-1bit": (lambda: encode(rgb().convert("1"), "PNG"), "PNG"),
    "png-palette": (lambda: encode(rgb().convert("P"), "PNG"), "PNG"),
    "png-palette-transparency": (
        lambda: encode(rgb().convert("P"), "PNG", transparency=0),
        "PNG",
    ),
    "png-rgb-16bit": (rgb48_png, "PNG"),
    "webp-lossy": (lambda: encode(rgb(), "WEBP", quality=80), "WEBP"),
    "webp-lossless": (lambda: encode(rgb(), "WEBP", lossless=True), "WEBP"),
    "webp-rgba": (lambda: encode(rgba(), "WEBP", lossless=True), "WEBP"),
    "webp-rgba-lossy": (lambda: encode(rgba(), "WEBP", quality=80), "WEBP"),
}


def reference(data: bytes, tmp_path: Path, name: str = "crop.img") -> torch.Tensor:
    """What training's evaluation decodes from the same bytes written to a file."""
    path = tmp_path / name
    path.write_bytes(data)
    return load_image(path)


# ---------------------------------------------------------------------------------------------
# Accepted: the one-path guarantee


@pytest.mark.parametrize("case", list(ACCEPTED))
@pytest.mark.parametrize("decoder", ["auto", "pillow"])
def test_accepted_images_equal_the_training_path(case: str, decoder: str, tmp_path: Path) -> None:
    build, fmt = ACCEPTED[case]
    data = build()
    decoded = decode_image(data, decoder=decoder)  # type: ignore[arg-type]
    assert isinstance(decoded, DecodedImage)
    pixels = decoded.pixels
    assert pixels.dtype == torch.uint8
    assert pixels.ndim == 3
    assert pixels.shape[0] == 3
    assert (decoded.height, decoded.width) == tuple(pixels.shape[1:])
    assert decoded.format == fmt
    assert decoded.media_type == imaging.MEDIA_TYPES[fmt]
    assert torch.equal(pixels, reference(data, tmp_path))


def test_alpha_is_composited_on_black() -> None:
    """A fully transparent pixel is black, an opaque one keeps its colour."""
    pixels = decode_image(encode(rgba(), "PNG")).pixels
    array = picture()
    assert pixels[:, :, 0].eq(0).all()  # alpha 0 in the first column
    assert torch.equal(pixels[:, :, -1], torch.from_numpy(array[:, -1].T.copy()))


@pytest.mark.parametrize(("orientation", "turns"), [(6, -1), (8, 1)])
def test_exif_rotation_is_applied(orientation: int, turns: int, tmp_path: Path) -> None:
    """Orientation 6 (stored turned left) and 8: output is the upright image, sides swapped."""
    upright = rgb(48, 24)
    plain = encode(upright, "JPEG", quality=90)
    rotated = encode(upright, "JPEG", quality=90, exif=exif_with_orientation(orientation))
    decoded = decode_image(rotated)
    assert (decoded.width, decoded.height) == (48, 24)
    expected = torch.rot90(decode_image(plain).pixels, turns, dims=(1, 2))
    assert torch.equal(decoded.pixels, expected)
    assert torch.equal(decoded.pixels, reference(rotated, tmp_path))


def grey16() -> np.ndarray:
    return (np.arange(16 * 12).reshape(16, 12) * 343 % 65536).astype(np.uint16)


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = grey16()
    data = encode(Image.fromarray(values), "PNG")
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "I;16"
    decoded = decode_image(data)
    expected = torch.from_numpy((values >> 8).astype(np.uint8)).expand(3, -1, -1)
    assert torch.equal(decoded.pixels, expected)
    assert decoded.pixels.max() > 200  # the clipped version would be almost all 255

    assert torch.equal(reference(data, tmp_path), decoded.pixels)  # the one path, as training


def test_16bit_grey_png_keeps_its_exif_rotation() -> None:
    data = encode(Image.fromarray(grey16()), "PNG", exif=exif_with_orientation(6))
    decoded = decode_image(data)
    assert (decoded.width, decoded.height) == (16, 12)
    upright = torch.from_numpy((grey16() >> 8).astype(np.uint8))
    assert torch.equal(decoded.pixels[0], torch.rot90(upright, -1))


def test_rgb_16bit_png_keeps_the_high_byte() -> None:
    decoded = decode_image(rgb48_png())
    samples = (np.arange(16 * 8 * 3).reshape(16, 8, 3) * 677 % 65536) >> 8
    assert torch.equal(decoded.pixels, torch.from_numpy(samples.astype(np.uint8)).permute(2, 0, 1))


def test_only_the_bytes_decide_the_format(tmp_path: Path) -> None:
    """A PNG is a PNG whatever it is called; decode_image never sees a name or content type."""
    data = encode(rgb(), "PNG")
    decoded = decode_image(data)
    assert (decoded.format, decoded.media_type) == ("PNG", "image/png")
    assert torch.equal(decoded.pixels, reference(data, tmp_path, "looks-like.jpg"))


def test_trailing_data_after_a_complete_image_is_ignored() -> None:
    """Polyglots: a JPEG with a ZIP appended, a PNG with junk after IEND decode as the image."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("payload.html", "<script>alert(1)</script>")
    jpeg = encode(rgb(), "JPEG")
    png = encode(rgb(), "PNG")
    for clean, polyglot in ((jpeg, jpeg + archive.getvalue()), (png, png + b"\x00junk" * 50)):
        assert torch.equal(decode_image(polyglot).pixels, decode_image(clean).pixels)


def test_bytearray_and_memoryview_are_accepted() -> None:
    data = encode(rgb(), "PNG")
    expected = decode_image(data).pixels
    assert torch.equal(decode_image(bytearray(data)).pixels, expected)  # type: ignore[arg-type]
    assert torch.equal(decode_image(memoryview(data)).pixels, expected)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Refused


def gif(animated: bool) -> bytes:
    frames = [rgb(), Image.fromarray(picture(seed=1))]
    if animated:
        return encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    return encode(frames[0], "GIF")


def animated(fmt: str) -> bytes:
    frames = [rgb(), Image.fromarray(picture(seed=1)), Image.fromarray(picture(seed=2))]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:])


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def truncated_with_eoi(data: bytes, keep: float = 1 / 3) -> bytes:
    """A JPEG cut short that still ends with an EOI marker: Pillow grey-fills the rest."""
    return data[: int(len(data) * keep)] + b"\xff\xd9"


def cmyk_jpeg() -> bytes:
    return encode(rgb(192, 96).convert("CMYK"), "JPEG")


def idat_span(data: bytes) -> tuple[int, int]:
    """(start, end) of the first IDAT chunk's payload."""
    start = data.index(b"IDAT") + 4
    (length,) = struct.unpack(">I", data[start - 8 : start - 4])
    return start, start + length


def png_with_flipped_idat_byte() -> bytes:
    data = bytearray(encode(rgb(), "PNG"))
    start, end = idat_span(bytes(data))
    data[(start + end) // 2] ^= 0x40  # payload changed, stored CRC left as it was
    return bytes(data)


def png_with_wrong_idat_crc() -> bytes:
    data = bytearray(encode(rgb(), "PNG"))
    _, end = idat_span(bytes(data))
    data[end] ^= 0xFF  # the CRC after the payload; the payload itself is intact
    return bytes(data)


def jpeg_signature_then_html() -> bytes:
    return b"\xff\xd8\xff\xe0" + b"<html><script>fetch('/steal')</script></html>" * 4


SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="128"/>'

REFUSED: dict[str, tuple[Callable[[], bytes], type[ImageError], str | None]] = {
    "zero-bytes": (lambda: b"", EmptyImage, None),
    "random-bytes": (lambda: b"\x13\x37\xde\xad\xbe\xef\x00\x42", UnsupportedImageType, None),
    "text": (lambda: b"camera 3, person 17, 2024-05-01\n", UnsupportedImageType, "text"),
    "html": (
        lambda: b"<!DOCTYPE html><html><body><script>x()</script></body></html>",
        UnsupportedImageType,
        "HTML",
    ),
    "svg": (lambda: SVG, UnsupportedImageType, "SVG"),
    "pdf": (lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", UnsupportedImageType, "PDF"),
    "gif-static": (lambda: gif(animated=False), UnsupportedImageType, "GIF"),
    "gif-animated": (lambda: gif(animated=True), UnsupportedImageType, "GIF"),
    "gif-huge-header": (
        lambda: b"GIF89a\xff\xff\xff\xff\x00\x00\x00" + bytes(16) + b";",
        UnsupportedImageType,
        "GIF",
    ),
    "bmp": (lambda: encode(rgb(), "BMP"), UnsupportedImageType, "BMP"),
    "tiff": (lambda: encode(rgb(), "TIFF"), UnsupportedImageType, "TIFF"),
    "webp-animated": (lambda: animated("WEBP"), AnimatedImage, None),
    "apng": (lambda: animated("PNG"), AnimatedImage, None),
    "jpeg-truncated": (lambda: truncated(encode(rgb(192, 96), "JPEG")), CorruptImage, None),
    "jpeg-cut-in-header": (lambda: encode(rgb(), "JPEG")[:300], CorruptImage, None),
    "jpeg-truncated-then-eoi": (
        lambda: truncated_with_eoi(encode(rgb(192, 96), "JPEG")),
        CorruptImage,
        None,
    ),
    "jpeg-progressive-truncated-then-eoi": (
        lambda: truncated_with_eoi(encode(rgb(192, 96), "JPEG", progressive=True), 0.6),
        CorruptImage,
        None,
    ),
    "jpeg-grey-truncated-then-eoi": (
        lambda: truncated_with_eoi(encode(rgb(192, 96).convert("L"), "JPEG")),
        CorruptImage,
        None,
    ),
    "jpeg-cmyk-truncated-then-eoi": (lambda: truncated_with_eoi(cmyk_jpeg()), CorruptImage, None),
    "jpeg-rotated-truncated-then-eoi": (  # Pillow's path (EXIF rotation): strict there too
        lambda: truncated_with_eoi(encode(rgb(192, 96), "JPEG", exif=exif_with_orientation(6))),
        CorruptImage,
        None,
    ),
    "jpeg-progressive-truncated": (
        lambda: truncated(encode(rgb(192, 96), "JPEG", progressive=True)),
        CorruptImage,
        None,
    ),
    "png-truncated": (lambda: truncated(encode(rgb(192, 96), "PNG")), CorruptImage, None),
    "png-no-iend": (lambda: encode(rgb(), "PNG")[:-12], CorruptImage, None),
    "webp-truncated": (lambda: truncated(encode(rgb(192, 96), "WEBP")), CorruptImage, None),
    "png-idat-corrupted": (png_with_flipped_idat_byte, CorruptImage, None),
    "png-idat-bad-crc": (png_with_wrong_idat_crc, CorruptImage, None),
    "jpeg-signature-html": (jpeg_signature_then_html, CorruptImage, None),
    "png-signature-only": (lambda: b"\x89PNG\r\n\x1a\n", CorruptImage, None),
    "riff-not-webp": (
        lambda: b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(24),
        UnsupportedImageType,
        "RIFF",
    ),
    "one-pixel": (lambda: encode(rgb(1, 1), "PNG"), ImageTooSmall, None),
    "too-thin": (lambda: encode(rgb(100, 7), "JPEG"), ImageTooSmall, None),
    "too-wide": (lambda: encode(Image.new("L", (5000, 10)), "PNG"), ImageTooLarge, None),
}

STATUSES = {
    EmptyImage: 400,
    UnsupportedImageType: 415,
    CorruptImage: 422,
    ImageTooLarge: 413,
    ImageTooSmall: 422,
    AnimatedImage: 422,
}


@pytest.mark.parametrize("case", list(REFUSED))
@pytest.mark.parametrize("decoder", ["auto", "pillow"])
def test_refused_with_the_right_class_status_and_sentence(case: str, decoder: str) -> None:
    build, expected, detected = REFUSED[case]
    with pytest.raises(expected) as caught:
        decode_image(build(), decoder=decoder)  # type: ignore[arg-type]
    error = caught.value
    assert type(error) is expected
    assert isinstance(error, ValueError)
    assert error.status == STATUSES[expected]
    assert_clear_sentence(error)
    if expected is UnsupportedImageType:
        assert error.detected == detected
        assert (detected or "not a recognised image") in error.detail
        assert "JPEG, PNG and WebP" in error.detail


def assert_clear_sentence(error: ImageError) -> None:
    detail = error.detail
    assert detail == str(error)
    assert detail.startswith("The ")
    assert detail.endswith(".")
    assert 20 < len(detail) < 320
    assert "BytesIO" not in detail
    assert "Traceback" not in detail


def test_statuses_codes_and_titles_are_distinct() -> None:
    assert {cls: cls.status for cls in STATUSES} == STATUSES
    codes = [cls.code for cls in STATUSES]
    assert len(set(codes)) == len(codes)
    assert all(
        code.replace("-", "").isalpha() and code.islower() for code in codes
    )  # kebab-case, like service.errors codes
    assert all(cls.title and cls.title[0].isupper() for cls in STATUSES)


def test_refusals_name_the_limits() -> None:
    with pytest.raises(ImageTooLarge) as large:
        decode_image(encode(Image.new("L", (300, 20)), "PNG"), max_side=256)
    assert "300 x 20" in large.value.detail
    assert "256 pixels a side" in large.value.detail
    with pytest.raises(ImageTooLarge) as many:
        decode_image(encode(Image.new("L", (100, 100)), "PNG"), max_pixels=5000)
    assert "10000 pixels" in many.value.detail
    assert "5000 pixels in all" in many.value.detail
    with pytest.raises(ImageTooSmall) as small:
        decode_image(encode(rgb(1, 1), "PNG"))
    assert "1 x 1" in small.value.detail
    assert "at least 8 pixels" in small.value.detail
    with pytest.raises(AnimatedImage) as moving:
        decode_image(animated("PNG"))
    assert "3 frames" in moving.value.detail


def test_an_unknown_decoder_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="decoder must be") as caught:
        decode_image(encode(rgb(), "PNG"), decoder="torchvision")  # type: ignore[arg-type]
    assert not isinstance(caught.value, ImageError)


def test_no_deprecation_warning_from_torchvision(recwarn: pytest.WarningsRecorder) -> None:
    """torchvision 0.29 deprecates its codecs; the fast path must not warn on every upload."""
    decode_image(encode(rgb(), "JPEG"))
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_limits_are_parameters() -> None:
    data = encode(rgb(48, 24), "PNG")
    assert decode_image(data, min_side=24).width == 24
    with pytest.raises(ImageTooSmall):
        decode_image(data, min_side=25)
    assert decode_image(data, max_side=48, max_pixels=48 * 24).height == 48
    with pytest.raises(ImageTooLarge):
        decode_image(data, max_pixels=48 * 24 - 1)


# ---------------------------------------------------------------------------------------------
# Size limits are enforced from the header, before any decoding


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if Pillow (or simplejpeg) is asked to decode pixels."""

    def refuse(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    monkeypatch.setattr(Image.Image, "load", refuse)
    monkeypatch.setattr(imaging.simplejpeg, "decode_jpeg", refuse)


def huge_png_header() -> bytes:
    """A 30000 x 30000 RGB PNG in a hundred bytes (a tiny IDAT that could never fill it)."""
    data = png_by_hand(30000, 30000, 8, 2, zlib.compress(b"\x00" * 64))
    assert len(data) < 200
    return data


def bomb_png() -> bytes:
    """4096 x 4096 black pixels (16.7 million, over the default 16 million) in ~16 KB."""
    side = 4096
    raw = (b"\x00" + bytes(side)) * side
    data = png_by_hand(side, side, 8, 0, zlib.compress(raw, 9))
    assert len(data) < 100_000
    return data


def huge_webp_header() -> bytes:
    """An extended-format WebP header declaring a 16000 x 16000 canvas."""
    vp8x = b"\x00\x00\x00\x00" + (15999).to_bytes(3, "little") * 2
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.usefixtures("no_decoding")
@pytest.mark.parametrize("pillow_global_limit", [True, False])
def test_huge_declared_size_is_refused_before_decoding(
    pillow_global_limit: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused whether Pillow's own (process-wide) bomb check is on or someone turned it off."""
    if not pillow_global_limit:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(huge_png_header())
    assert_clear_sentence(caught.value)
    assert "30000 x 30000" in caught.value.detail


@pytest.mark.usefixtures("no_decoding")
def test_decompression_bomb_is_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(bomb_png())
    assert "4096 x 4096" in caught.value.detail
    assert "16000000 pixels in all" in caught.value.detail


@pytest.mark.usefixtures("no_decoding")
def test_huge_webp_is_refused_before_pillow_opens_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """libwebp allocates its canvas when Pillow opens a file, so the size is read first."""

    def refuse(*args, **kwargs):
        raise AssertionError("Pillow opened the file")

    monkeypatch.setattr(Image, "open", refuse)
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(huge_webp_header())
    assert "16000 x 16000" in caught.value.detail


@pytest.mark.parametrize(
    ("fmt", "data"),
    [
        ("WEBP", encode(rgb(), "WEBP")),
        ("WEBP", encode(rgba(), "WEBP", lossless=True)),
        ("WEBP", animated("WEBP")),
        ("PNG", encode(rgb(37, 23), "PNG")),
    ],
)
def test_size_read_from_the_header_matches_pillow(fmt: str, data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as image:
        assert imaging._declared_size(fmt, data) == image.size


def test_pillow_globals_are_left_alone() -> None:
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    for build, *_ in REFUSED.values():
        with pytest.raises(ImageError):
            decode_image(build())
    with pytest.raises(ImageTooLarge):
        decode_image(huge_png_header())
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_images_are_never_grey_filled(monkeypatch: pytest.MonkeyPatch) -> None:
    """If some code sets Pillow's LOAD_TRUNCATED_IMAGES, decoding stops loudly instead."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        decode_image(encode(rgb(), "JPEG"))


# ---------------------------------------------------------------------------------------------
# The simplejpeg fast path for plain JPEGs


def test_fast_path_covers_plain_jpegs_only(tmp_path: Path) -> None:
    assert imaging._simplejpeg_equal(), "simplejpeg gives other pixels than Pillow here"

    def fast(data: bytes) -> torch.Tensor | None:
        with Image.open(io.BytesIO(data)) as image:
            return imaging._fast_jpeg(data, image, None)

    for case in ("jpeg-rgb-420", "jpeg-rgb-444", "jpeg-progressive", "jpeg-odd-size", "jpeg-grey"):
        data = ACCEPTED[case][0]()
        pixels = fast(data)
        assert pixels is not None, case
        assert pixels.is_contiguous()
        assert torch.equal(pixels, reference(data, tmp_path)), case
    rotated = encode(rgb(), "JPEG", exif=exif_with_orientation(6))
    for data in (ACCEPTED["jpeg-cmyk"][0](), ACCEPTED["jpeg-mpo"][0](), rotated):
        assert fast(data) is None


def mutations(data: bytes, count: int, seed: int) -> list[bytes]:
    """Random byte flips and cuts of a valid file: hostile inputs near the real thing."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        mutated = bytearray(data)
        for _ in range(int(rng.integers(1, 6))):
            mutated[int(rng.integers(0, len(mutated)))] = int(rng.integers(0, 256))
        if rng.random() < 0.25:
            mutated = mutated[: int(rng.integers(0, len(mutated)))]
        out.append(bytes(mutated))
    return out


def outcome(data: bytes, decoder: str) -> torch.Tensor | type[ImageError]:
    try:
        return decode_image(data, decoder=decoder).pixels  # type: ignore[arg-type]
    except ImageError as error:
        return type(error)


@pytest.mark.parametrize("options", [{"quality": 90}, {"progressive": True}], ids=str)
def test_mutated_jpegs_get_the_same_answer_from_both_decoders(options: dict) -> None:
    """Only ImageError escapes, and the fast path accepts and refuses exactly what Pillow does."""
    for data in mutations(encode(rgb(), "JPEG", **options), count=150, seed=7):
        auto, pillow = outcome(data, "auto"), outcome(data, "pillow")
        if isinstance(auto, torch.Tensor) and isinstance(pillow, torch.Tensor):
            assert torch.equal(auto, pillow)
        else:
            assert auto == pillow


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_mutated_png_and_webp_raise_only_image_errors(fmt: str) -> None:
    for data in mutations(encode(rgba(), fmt), count=100, seed=11):
        outcome(data, "auto")


# ---------------------------------------------------------------------------------------------
# Property tests (hypothesis is optional: skipped where it is not installed)


def decodes_or_refuses(data: bytes) -> None:
    try:
        decoded = decode_image(data)
    except ImageError:
        return
    assert decoded.pixels.dtype == torch.uint8
    assert decoded.pixels.shape == (3, decoded.height, decoded.width)


def test_property_random_bytes_only_raise_image_errors() -> None:
    hypothesis = pytest.importorskip("hypothesis")
    strategies = hypothesis.strategies

    @hypothesis.settings(max_examples=200, deadline=None, database=None)
    @hypothesis.given(
        strategies.one_of(
            strategies.binary(max_size=512),
            strategies.sampled_from(
                [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\0\0\0\0WEBP"]
            ).flatmap(lambda head: strategies.binary(max_size=512).map(lambda tail: head + tail)),
        )
    )
    def check(data: bytes) -> None:
        decodes_or_refuses(data)

    check()


def test_property_mutated_jpegs_only_raise_image_errors() -> None:
    hypothesis = pytest.importorskip("hypothesis")
    strategies = hypothesis.strategies
    valid = encode(rgb(), "JPEG", quality=90)

    @hypothesis.settings(max_examples=200, deadline=None, database=None)
    @hypothesis.given(
        strategies.lists(
            strategies.tuples(strategies.integers(0, len(valid) - 1), strategies.integers(0, 255)),
            min_size=1,
            max_size=8,
        ),
        strategies.integers(1, len(valid)),
    )
    def check(edits: list[tuple[int, int]], keep: int) -> None:
        mutated = bytearray(valid)
        for position, value in edits:
            mutated[position] = value
        decodes_or_refuses(bytes(mutated[:keep]))

    check()


# ---------------------------------------------------------------------------------------------
# Memory: decoded at the size needed, inside a budget


def test_size_gives_resized_pixels_and_the_uploads_own_size(tmp_path: Path) -> None:
    data = encode(rgb(192, 96), "JPEG", quality=95)
    small = decode_image(data, size=(64, 32))
    assert tuple(small.pixels.shape) == (3, 64, 32)
    assert (small.width, small.height) == (96, 192)
    # below four times the size: the same pixels as a full decode, then the resize
    full = decode_image(data)
    assert torch.equal(small.pixels, resize(full.pixels, (64, 32)))
    rotated = decode_image(encode(rgb(192, 96), "JPEG", exif=exif_with_orientation(6)), size=(8, 8))
    assert (rotated.width, rotated.height) == (192, 96)  # the oriented size


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_with_nearly_the_same_pixels() -> None:
    """A 2048 x 1024 photo for a 128 x 64 network: decoded at 1/4 scale (512 x 256), which the
    resize then takes to 128 x 64; the result stays within a few grey levels of the full
    decode's."""
    y, x = np.mgrid[0:2048, 0:1024]
    smooth = np.stack([x // 5 % 256, y // 9 % 256, (x + y) // 13 % 256], -1).astype(np.uint8)
    data = encode(Image.fromarray(smooth), "JPEG", quality=92)
    calls: list[dict] = []
    real = imaging.simplejpeg.decode_jpeg

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    imaging.simplejpeg.decode_jpeg = spy
    try:
        reduced = decode_image(data, size=(128, 64))
    finally:
        imaging.simplejpeg.decode_jpeg = real
    assert (reduced.width, reduced.height) == (1024, 2048)
    assert calls[-1]["min_height"] == 256 and calls[-1]["min_width"] == 128
    exact = resize(decode_image(data).pixels, (128, 64))
    difference = (reduced.pixels.int() - exact.int()).abs().float()
    assert difference.mean() < 2.0 and difference.max() <= 64


def test_reserve_is_entered_with_the_declared_pixels_before_decoding() -> None:
    seen: list[int] = []
    decoded = {"before": None}

    @contextlib.contextmanager
    def reserve(pixels: int):
        seen.append(pixels)
        decoded["before"] = True
        yield

    decode_image(encode(rgb(192, 96), "PNG"), reserve=reserve)
    decode_image(encode(rgb(192, 96), "JPEG"), reserve=reserve, size=(64, 32))
    assert seen == [192 * 96, 192 * 96]

    class Refused(Exception):
        pass

    @contextlib.contextmanager
    def refuse(pixels: int):
        raise Refused
        yield  # pragma: no cover

    with pytest.raises(Refused):
        decode_image(encode(rgb(192, 96), "PNG"), reserve=refuse)
    with pytest.raises(ImageTooLarge):  # the size limits come first: reserve is never asked
        decode_image(encode(rgb(192, 96), "PNG"), reserve=refuse, max_pixels=100)
