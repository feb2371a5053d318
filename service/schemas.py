"""Request and response bodies, as the OpenAPI document describes them."""

from __future__ import annotations

import unicodedata
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from .store import Hit, Item, TrackSummary

__all__ = [
    "EmbedBatchResponse",
    "EmbedItem",
    "EmbedResponse",
    "EmptyReason",
    "GalleryCounts",
    "GalleryItem",
    "IngestResponse",
    "ItemMeta",
    "ProblemDetails",
    "Provenance",
    "SearchResponse",
    "SearchResult",
    "TrackList",
    "TrackResponse",
    "TrackSummaryOut",
    "has_credentials",
]


class ProblemDetails(BaseModel):
    """RFC 9457 problem details (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


class EmbedResponse(BaseModel):
    query_id: str = Field(description="usable by GET /search for expires_in_s seconds")
    embedding: list[float] = Field(description="flip-averaged, L2-normalised")
    dim: int
    model: str = Field(description="architecture and checkpoint digest")
    expires_in_s: float


class EmbedItem(BaseModel):
    """One image of a batch: its vector and query id, or why it has none."""

    index: int = Field(description="position of the image part in the request")
    filename: str | None = None
    query_id: str | None = None
    embedding: list[float] | None = None
    error: ProblemDetails | None = Field(None, description="this image's problem, if any")


class EmbedBatchResponse(BaseModel):
    results: list[EmbedItem] = Field(description="one per image part, in the order sent")
    count: int = Field(description="images embedded")
    failed: int = Field(description="images refused (each result says why)")
    dim: int
    model: str
    expires_in_s: float


class Provenance(BaseModel):
    """Where a crop came from, when footage ingestion said so (else all None)."""

    source: str | None = Field(
        None, description="video file name or stream URL (without credentials)"
    )
    frame: int | None = Field(None, description="frame number in the source (0-based)")
    box: tuple[int, int, int, int] | None = Field(
        None, description="x, y, width, height of the crop in the frame's pixels"
    )


class GalleryItem(Provenance):
    item_id: str
    gallery: str
    camera_id: str
    timestamp: datetime
    identity: str | None = None
    track_id: str | None = None
    image_type: str
    created_at: datetime

    @classmethod
    def from_item(cls, item: Item) -> GalleryItem:
        return cls(
            item_id=item.item_id,
            gallery=item.gallery,
            camera_id=item.camera_id,
            timestamp=item.timestamp,
            identity=item.identity,
            track_id=item.track_id,
            image_type=item.image_type,
            created_at=item.created_at,
            source=item.source,
            frame=item.frame,
            box=item.box,
        )


class IngestResponse(BaseModel):
    items: list[GalleryItem]
    count: int


class CameraCount(BaseModel):
    camera_id: str
    count: int


class GalleryCount(BaseModel):
    gallery: str
    count: int
    cameras: list[CameraCount]


class GalleryCounts(BaseModel):
    galleries: list[GalleryCount]
    total: int

    @classmethod
    def from_counts(cls, counts: dict[str, dict[str, int]]) -> GalleryCounts:
        galleries = [
            GalleryCount(
                gallery=name,
                count=sum(cameras.values()),
                cameras=[CameraCount(camera_id=c, count=n) for c, n in sorted(cameras.items())],
            )
            for name, cameras in sorted(counts.items())
        ]
        return cls(galleries=galleries, total=sum(g.count for g in galleries))


class SearchResult(Provenance):
    rank: int
    item_id: str
    score: float = Field(description="cosine similarity, higher is closer")
    camera_id: str
    timestamp: datetime
    identity: str | None = None
    track_id: str | None = None

    @classmethod
    def from_hit(cls, rank: int, hit: Hit) -> SearchResult:
        item = hit.item
        return cls(
            rank=rank,
            item_id=item.item_id,
            score=hit.score,
            camera_id=item.camera_id,
            timestamp=item.timestamp,
            identity=item.identity,
            track_id=item.track_id,
            source=item.source,
            frame=item.frame,
            box=item.box,
        )


class EmptyReason(BaseModel):
    """Why a search found nothing: what the gallery held, and what each filter took away
    (in this order: cameras, exclude_camera, the query item itself, since/until)."""

    gallery_items: int
    removed_by: dict[str, int]
    detail: str


class SearchResponse(BaseModel):
    results: list[SearchResult] = Field(description="best first")
    gallery: str
    k: int
    took_ms: float
    empty_reason: EmptyReason | None = Field(
        None, description="only when results is empty: why (counts per filter)"
    )


class ItemMeta(BaseModel):
    """One image's metadata in ``POST /gallery`` (form fields, or an object of ``metadata``).

    Labels are printable text: control characters (NUL included) are refused, and a camera id
    may not hold a comma, which separates camera ids in ``cameras`` and ``exclude_camera``.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    camera_id: str = Field(min_length=1, max_length=128)
    timestamp: AwareDatetime
    identity: str | None = Field(None, min_length=1, max_length=128)
    track_id: str | None = Field(None, min_length=1, max_length=128)
    source: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="the video's file name or stream URL (without credentials) it came from",
    )
    frame: int | None = Field(None, ge=0, le=2**40, description="frame number in the source")
    box: tuple[int, int, int, int] | None = Field(
        None, description="x, y, width, height of the crop in the frame's pixels"
    )

    @field_validator("camera_id", "identity", "track_id", "source")
    @classmethod
    def _printable(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
            raise ValueError("must not contain control characters")
        if info.field_name == "camera_id" and "," in value:
            raise ValueError("must not contain ',' (it separates camera ids in search filters)")
        if info.field_name == "source" and has_credentials(value):
            raise ValueError("must not hold a user name or password (user:pass@ in a URL)")
        return value

    @field_validator("box")
    @classmethod
    def _box(cls, value: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
        if value is None:
            return None
        x, y, w, h = value
        if x < 0 or y < 0 or w < 1 or h < 1 or max(value) > 1 << 20:
            raise ValueError("must be [x, y, width, height]: x, y >= 0, width, height >= 1")
        return value


def has_credentials(source: str) -> bool:
    """Whether a URL carries ``user[:password]@`` (kept out of the gallery: anyone who can
    search would read them)."""
    scheme, sep, rest = source.partition("://")
    if not sep or not scheme.isascii():
        return False
    return "@" in rest.split("/", 1)[0]


class TrackResponse(BaseModel):
    """A track: its crops in time order, where and when it was seen."""

    track_id: str
    gallery: str
    camera_id: str = Field(description="camera of the track's first crop")
    cameras: list[str] = Field(description="every camera the track's crops came from")
    first_seen: datetime
    last_seen: datetime
    count: int
    items: list[GalleryItem] = Field(description="oldest first; crops at /gallery/{item_id}/image")

    @classmethod
    def from_items(cls, gallery: str, track_id: str, items: list[Item]) -> TrackResponse:
        return cls(
            track_id=track_id,
            gallery=gallery,
            camera_id=items[0].camera_id,
            cameras=sorted({i.camera_id for i in items}),
            first_seen=items[0].timestamp,
            last_seen=items[-1].timestamp,
            count=len(items),
            items=[GalleryItem.from_item(i) for i in items],
        )


class TrackSummaryOut(BaseModel):
    track_id: str
    camera_id: str = Field(description="camera of the track's latest crop")
    first_seen: datetime
    last_seen: datetime
    count: int = Field(description="crops")

    @classmethod
    def from_summary(cls, t: TrackSummary) -> TrackSummaryOut:
        return cls(
            track_id=t.track_id,
            camera_id=t.camera_id,
            first_seen=t.first,
            last_seen=t.last,
            count=t.count,
        )


class TrackList(BaseModel):
    """A page of a gallery's tracks, newest (by last time) first."""

    gallery: str
    tracks: list[TrackSummaryOut]
    next_cursor: str | None = Field(
        None, description="pass as cursor for the next page; absent on the last page"
    )
