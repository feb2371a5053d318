"""Sending a track's crops to the service: one ``POST /gallery`` per track (the service
stores a request's crops all or none, so a track is never half-indexed), through the client
(``client.SonaClient.add_track``: retried when the service is busy or unreachable for a moment,
and looked up before it is sent again when an answer was lost). Errors become ``FootageError``.
"""

from __future__ import annotations

from client import SonaClient, SonaError, SonaUnreachable

from .errors import FootageError

__all__ = ["TrackUploader"]


class TrackUploader:
    def __init__(
        self,
        url: str,
        gallery: str,
        *,
        api_key: str | None = None,
        retries: int = 8,
        backoff: float = 0.5,
        timeout: float = 120.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.gallery = gallery
        self.client = SonaClient(
            self.url, api_key=api_key, retries=retries, backoff_s=backoff, timeout=timeout
        )

    def close(self) -> None:
        self.client.close()

    def check(self) -> None:
        """The service answers (before any decoding, so a wrong URL is one line at once)."""
        try:
            self.client.healthy()
        except SonaUnreachable as exc:
            raise FootageError(exc.detail) from None
        except SonaError as exc:
            raise FootageError(f"{self.url}/healthz answered {exc.status}") from None

    def exists(self, track_id: str) -> list[str]:
        """The item ids the service holds for the track (empty: none)."""
        try:
            track = self.client.track(track_id, gallery=self.gallery)
        except SonaUnreachable as exc:
            raise FootageError(exc.detail) from None
        except SonaError as exc:
            raise FootageError(
                f"looking up track {track_id}: {exc.status} {exc.detail[:300]}"
            ) from None
        return [] if track is None else [item.item_id for item in track.items]

    def send(self, track_id: str, crops: list[tuple[bytes, dict]]) -> list[str]:
        """POST the track's JPEG crops with their metadata; returns the new item ids."""
        images = [(f"{track_id}-{n}.jpg", data) for n, (data, _) in enumerate(crops)]
        try:
            items = self.client.add_track(
                track_id, images, [meta for _, meta in crops], gallery=self.gallery
            )
        except SonaUnreachable as exc:
            raise FootageError(exc.detail) from None
        except SonaError as exc:
            raise FootageError(
                f"the service refused track {track_id}: {exc.status} {exc.detail[:300]}"
            ) from None
        return [item.item_id for item in items]
