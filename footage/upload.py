"""Sending a track's crops to the service: one ``POST /gallery`` per track (the service
stores a request's crops all or none, so a track is never half-indexed), retried when the
service is busy (429/503, after its Retry-After) or unreachable for a moment."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import httpx

from .errors import FootageError

__all__ = ["TrackUploader"]


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))[:300]
    except ValueError:
        return response.text[:300]


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
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self.gallery = gallery
        self.retries = retries
        self.backoff = backoff
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.client.close()

    def _request(
        self, method: str, path: str, track: str | None = None, **kwargs
    ) -> httpx.Response:
        """Retries; a POST of ``track`` lost in transit is looked up before it is sent again
        (it may have landed), and then answered with what the service holds."""
        delay = self.backoff
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                if track is not None and attempt > 0 and (held := self.exists(track)):
                    return httpx.Response(201, json={"items": [{"item_id": i} for i in held]})
                response = self.client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise FootageError(f"cannot reach the service at {self.url}: {exc}") from None
                time.sleep(delay)
                delay = min(delay * 2, 30)
                continue
            if response.status_code in (429, 502, 503, 504) and not last:
                wait = response.headers.get("Retry-After")
                time.sleep(float(wait) if wait and wait.isdigit() else delay)
                delay = min(delay * 2, 30)
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def check(self) -> None:
        """The service answers (before any decoding, so a wrong URL is one line at once)."""
        response = self._request("GET", "/healthz")
        if response.status_code != 200:
            raise FootageError(f"{self.url}/healthz answered {response.status_code}")

    def exists(self, track_id: str) -> list[str]:
        """The item ids the service holds for the track (empty: none)."""
        response = self._request(
            "GET", f"/gallery/tracks/{quote(track_id, safe='')}", params={"gallery": self.gallery}
        )
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise FootageError(
                f"looking up track {track_id}: {response.status_code} {_detail(response)}"
            )
        return [item["item_id"] for item in response.json()["items"]]

    def send(self, track_id: str, crops: list[tuple[bytes, dict]]) -> list[str]:
        """POST the track's JPEG crops with their metadata; returns the new item ids."""
        files = [
            ("images", (f"{track_id}-{n}.jpg", data, "image/jpeg"))
            for n, (data, _) in enumerate(crops)
        ]
        form = {"metadata": json.dumps([meta for _, meta in crops])}
        response = self._request(
            "POST", "/gallery", track_id, params={"gallery": self.gallery}, files=files, data=form
        )
        if response.status_code != 201:
            raise FootageError(
                f"the service refused track {track_id}: {response.status_code} {_detail(response)}"
            )
        return [item["item_id"] for item in response.json()["items"]]
