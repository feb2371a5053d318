"""``SonaClient``: the service's HTTP API from Python, typed, with the retries it calls for.

The service answers 503 or 429 with ``Retry-After`` when it is busy (a full embedding queue,
the decoders at their pixel budget, a store that is briefly unavailable): the client waits
that long and tries again, as it does when the connection cannot be made. A request that may
have reached the service (a timeout, a connection dropped mid-answer, a proxy's 502/504) is
sent again only when it is idempotent, so ``add`` never stores the same crops twice;
``add_track`` looks its track up first and sends again only if it is not there (see
``client.retry``). Errors are ``SonaError`` with the problem details the service sent.

    with SonaClient("http://127.0.0.1:8000", api_key="...") as sona:
        items = sona.add([Path("a.jpg")], camera_id="lobby", timestamp="2024-05-01T12:00:00Z")
        hits = sona.search_by_image(Path("query.jpg"), k=5, group_by="identity")
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import httpx

from .media import media_type_for
from .retry import REFUSED_STATUSES, UNSURE_STATUSES, RetryPolicy

__all__ = [
    "Embedding",
    "Item",
    "Match",
    "SearchAnswer",
    "SonaClient",
    "SonaError",
    "SonaUnreachable",
    "Track",
]

#: What an image argument may be: a file, or encoded bytes (optionally with a file name).
ImageInput = Path | str | bytes | tuple[str, bytes]


class SonaError(Exception):
    """An answer that was not a success: its status and the service's problem details."""

    def __init__(self, status: int, detail: str, problem: Mapping[str, Any] | None = None):
        super().__init__(f"{status}: {detail}" if status else detail)
        self.status = status
        self.detail = detail
        self.problem = dict(problem or {})


class SonaUnreachable(SonaError):
    """No answer at all, after the retries: nothing listens, or the connection keeps failing."""


@dataclass(frozen=True)
class Embedding:
    """One image's vector (flip-averaged, L2-normalised), or ``error`` in a batch."""

    index: int
    query_id: str | None
    vector: list[float] | None
    filename: str | None = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class Item:
    item_id: str
    gallery: str
    camera_id: str
    timestamp: datetime
    identity: str | None
    track_id: str | None
    image_type: str = ""
    created_at: datetime | None = None
    source: str | None = None  # provenance from footage: file name or stream URL
    frame: int | None = None
    box: tuple[int, int, int, int] | None = None  # x, y, w, h in the frame's pixels

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Item:
        created = data.get("created_at")
        box = data.get("box")
        return cls(
            item_id=data["item_id"],
            gallery=data["gallery"],
            camera_id=data["camera_id"],
            timestamp=datetime.fromisoformat(data["timestamp"]),
            identity=data.get("identity"),
            track_id=data.get("track_id"),
            image_type=data.get("image_type", ""),
            created_at=datetime.fromisoformat(created) if created else None,
            source=data.get("source"),
            frame=data.get("frame"),
            box=tuple(box) if box else None,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Track:
    """A footage track: its crops oldest first, where and when it was seen."""

    track_id: str
    gallery: str
    camera_id: str
    first_seen: datetime
    last_seen: datetime
    items: list[Item]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Track:
        return cls(
            track_id=data["track_id"],
            gallery=data["gallery"],
            camera_id=data["camera_id"],
            first_seen=datetime.fromisoformat(data["first_seen"]),
            last_seen=datetime.fromisoformat(data["last_seen"]),
            items=[Item.from_json(i) for i in data["items"]],
        )


@dataclass(frozen=True)
class Match:
    rank: int
    item_id: str
    score: float
    camera_id: str
    timestamp: datetime
    identity: str | None
    track_id: str | None


@dataclass(frozen=True)
class SearchAnswer:
    matches: list[Match]
    gallery: str
    k: int
    took_ms: float
    raw: dict[str, Any] = field(repr=False, default_factory=dict)  # the whole JSON answer


def _image_part(name: str, image: ImageInput) -> tuple[str, tuple[str, bytes, str]]:
    if isinstance(image, tuple):
        filename, data = image
    elif isinstance(image, bytes):
        filename, data = "crop.jpg", image
    else:
        path = Path(image)
        filename, data = path.name, path.read_bytes()
    return name, (filename, data, media_type_for(filename))


def _iso(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


class SonaClient:
    """A connection pool to one service. ``retries``: further attempts after a 503/429 or a
    failed connection, waiting ``Retry-After`` (at most ``max_wait_s``) or ``backoff_s``
    doubling with ``jitter`` (``client.retry.RetryPolicy``); ``sleep`` is the waiting
    function (tests may count the waits)."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        retries: int = 5,
        backoff_s: float = 0.5,
        max_wait_s: float = 30.0,
        jitter: float = 0.5,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self.policy = RetryPolicy(retries, backoff_s, max_wait_s, jitter)
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> SonaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- transport ----------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        landed: Callable[[], httpx.Response | None] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One API call with the retries of ``client.retry``; a non-2xx answer raises
        ``SonaError``. ``landed`` makes a non-idempotent call safe to send again: after an
        attempt that may have reached the service it is asked first, and what it returns (the
        effect found in place) is the answer; ``None`` means send again."""
        policy, unsure = self.policy, False
        for attempt in range(policy.retries + 1):
            last = attempt == policy.retries
            if unsure and landed is not None and (found := landed()) is not None:
                return found
            try:
                response = self._http.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                if last:  # never sent
                    raise SonaUnreachable(
                        0, f"cannot reach the service at {self.url}: {exc}"
                    ) from exc
                self._sleep(policy.wait(attempt))
                continue
            except httpx.TransportError as exc:  # it may have reached the service
                if last or not (landed or policy.may_resend(method, sent=True)):
                    raise SonaUnreachable(0, f"no answer from {self.url}: {exc!r}") from exc
                unsure = True
                self._sleep(policy.wait(attempt))
                continue
            status = response.status_code
            if not last and (
                status in REFUSED_STATUSES
                or (
                    status in UNSURE_STATUSES
                    and (landed or policy.may_resend(method, sent=True, status=status))
                )
            ):
                unsure = status in UNSURE_STATUSES
                self._sleep(policy.wait(attempt, response.headers.get("Retry-After")))
                continue
            if response.is_success:
                return response
            raise self._error(response)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _error(response: httpx.Response) -> SonaError:
        try:
            problem = response.json()
            detail = problem.get("detail") or response.reason_phrase
        except ValueError:
            problem, detail = {}, response.text[:200] or response.reason_phrase
        return SonaError(response.status_code, str(detail), problem)

    # -- the API ------------------------------------------------------------------------

    def healthy(self) -> None:
        """``/healthz``: the process answers (raises ``SonaUnreachable`` when it does not)."""
        self.request("GET", "/healthz")

    def ready(self) -> dict[str, Any]:
        """``/readyz``: model, device, encoder, demo or not. Raises while not ready."""
        return self.request("GET", "/readyz").json()

    def embed(self, image: ImageInput) -> Embedding:
        body = self.request("POST", "/embed", files=[_image_part("image", image)]).json()
        return Embedding(0, body["query_id"], body["embedding"])

    def embed_many(
        self, images: Sequence[ImageInput], *, all_or_nothing: bool = False
    ) -> list[Embedding]:
        """One request, one ``Embedding`` per image in order; a bad image gets ``error``."""
        params = {"batch": "true", "all_or_nothing": str(all_or_nothing).lower()}
        files = [_image_part("image", image) for image in images]
        body = self.request("POST", "/embed", params=params, files=files).json()
        return [
            Embedding(
                r["index"], r.get("query_id"), r.get("embedding"), r.get("filename"), r.get("error")
            )
            for r in body["results"]
        ]

    def add(
        self,
        images: Sequence[ImageInput],
        *,
        gallery: str = "default",
        camera_id: str | None = None,
        timestamp: datetime | str | None = None,
        identity: str | None = None,
        track_id: str | None = None,
        metadata: Iterable[Mapping[str, Any]] | None = None,
    ) -> list[Item]:
        """Index crops (durable when this returns): the same fields for every image, or
        ``metadata``, one mapping per image, overriding them."""
        fields = {
            "camera_id": camera_id,
            "timestamp": _iso(timestamp),
            "identity": identity,
            "track_id": track_id,
        }
        data = {k: v for k, v in fields.items() if v is not None}
        if metadata is not None:
            data["metadata"] = json.dumps(
                [{k: _iso(v) for k, v in m.items()} for m in metadata]  # type: ignore[arg-type]
            )
        files = [_image_part("images", image) for image in images]
        body = self.request(
            "POST", "/gallery", params={"gallery": gallery}, files=files, data=data
        ).json()
        return [Item.from_json(i) for i in body["items"]]

    def _search(self, method: str, params: dict[str, Any], **kwargs: Any) -> SearchAnswer:
        body = self.request(
            method, "/search", params={k: v for k, v in params.items() if v is not None}, **kwargs
        ).json()
        matches = [
            Match(
                rank=r["rank"],
                item_id=r["item_id"],
                score=r["score"],
                camera_id=r["camera_id"],
                timestamp=datetime.fromisoformat(r["timestamp"]),
                identity=r.get("identity"),
                track_id=r.get("track_id"),
            )
            for r in body["results"]
        ]
        return SearchAnswer(matches, body["gallery"], body["k"], body["took_ms"], body)

    @staticmethod
    def _filters(
        k: int,
        gallery: str | None,
        cameras: Sequence[str] | None,
        exclude_camera: Sequence[str] | None,
        since: datetime | str | None,
        until: datetime | str | None,
        group_by: Literal["identity", "track"] | None,
    ) -> dict[str, Any]:
        return {
            "k": k,
            "gallery": gallery,
            "cameras": ",".join(cameras) if cameras else None,
            "exclude_camera": ",".join(exclude_camera) if exclude_camera else None,
            "since": _iso(since),
            "until": _iso(until),
            "group_by": group_by,
        }

    def search_by_image(
        self,
        image: ImageInput,
        *,
        k: int = 10,
        gallery: str | None = None,
        cameras: Sequence[str] | None = None,
        exclude_camera: Sequence[str] | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        group_by: Literal["identity", "track"] | None = None,
    ) -> SearchAnswer:
        params = self._filters(k, gallery, cameras, exclude_camera, since, until, group_by)
        return self._search("POST", params, files=[_image_part("image", image)])

    def search_by_item(
        self,
        item_id: str,
        *,
        k: int = 10,
        gallery: str | None = None,
        cameras: Sequence[str] | None = None,
        exclude_camera: Sequence[str] | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        group_by: Literal["identity", "track"] | None = None,
    ) -> SearchAnswer:
        params = self._filters(k, gallery, cameras, exclude_camera, since, until, group_by)
        return self._search("GET", {"item_id": item_id, **params})

    def search_by_query(
        self,
        query_id: str,
        *,
        k: int = 10,
        gallery: str | None = None,
        cameras: Sequence[str] | None = None,
        exclude_camera: Sequence[str] | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        group_by: Literal["identity", "track"] | None = None,
    ) -> SearchAnswer:
        """Search with a ``query_id`` from ``embed`` (kept by the service for a while)."""
        params = self._filters(k, gallery, cameras, exclude_camera, since, until, group_by)
        return self._search("GET", {"query_id": query_id, **params})

    def get(self, item_id: str) -> Item:
        return Item.from_json(self.request("GET", f"/gallery/{item_id}").json())

    def image(self, item_id: str) -> bytes:
        return self.request("GET", f"/gallery/{item_id}/image").content

    def delete(self, item_id: str) -> None:
        self.request("DELETE", f"/gallery/{item_id}")

    def counts(self) -> dict[str, dict[str, int]]:
        """Items per gallery and camera: ``{"site1": {"c1": 12, "c3": 40}}``."""
        body = self.request("GET", "/gallery").json()
        return {
            g["gallery"]: {c["camera_id"]: c["count"] for c in g["cameras"]}
            for g in body["galleries"]
        }

    # -- tracks -------------------------------------------------------------------------

    def _track_json(self, track_id: str, gallery: str) -> dict[str, Any] | None:
        path = f"/gallery/tracks/{quote(track_id, safe='')}"
        try:
            return self.request("GET", path, params={"gallery": gallery}).json()
        except SonaError as exc:
            if exc.status == 404:
                return None
            raise

    def track(self, track_id: str, *, gallery: str = "default") -> Track | None:
        """A track's crops, camera and times; ``None`` when the gallery holds none of it."""
        body = self._track_json(track_id, gallery)
        return None if body is None else Track.from_json(body)

    def add_track(
        self,
        track_id: str,
        images: Sequence[ImageInput],
        metadata: Sequence[Mapping[str, Any]],
        *,
        gallery: str = "default",
    ) -> list[Item]:
        """Index a track's crops in one request (the service stores them all or none), each
        ``metadata`` mapping carrying ``track_id``. When the answer is lost, the track is
        looked up before the crops are sent again, so it is never indexed twice."""

        def landed() -> httpx.Response | None:
            body = self._track_json(track_id, gallery)
            if body is None:
                return None
            return httpx.Response(201, json={"items": body["items"], "count": body["count"]})

        form = {"metadata": json.dumps([{k: _iso(v) for k, v in m.items()} for m in metadata])}
        files = [_image_part("images", image) for image in images]
        body = self.request(
            "POST", "/gallery", landed=landed, params={"gallery": gallery}, files=files, data=form
        ).json()
        return [Item.from_json(i) for i in body["items"]]
