"""The client's one retry policy: what is sent again, and after how long.

- A connection that could not be made (nothing was sent) is tried again, whatever the method.
- 429 and 503 mean the service (or the proxy in front of it) refused the request without acting
  on it: tried again after ``Retry-After`` (seconds or an HTTP date), whatever the method.
- 502 and 504 come from a proxy, and a dropped connection or a read timeout from anywhere: the
  request may have reached the service. Only an idempotent request is sent again. ``POST
  /gallery`` is not idempotent (each request stores new items), so the client never sends it
  twice blindly; a track's upload looks the track up first (``SonaClient.add_track``).
- Attempts are bounded; waits double from ``backoff_s`` with random jitter (so that many
  clients refused at once do not come back at once), and no wait exceeds ``max_wait_s``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["IDEMPOTENT_METHODS", "REFUSED_STATUSES", "UNSURE_STATUSES", "RetryPolicy"]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: Answers that say the request was not acted on: safe to send again.
REFUSED_STATUSES = frozenset({429, 503})
#: Proxy answers after which the request may have reached the service.
UNSURE_STATUSES = frozenset({502, 504})


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (``"2"``, ``"0.5"`` or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` further attempts after the first; ``jitter`` is the fraction of a back-off
    wait drawn at random (0: exact doubling)."""

    retries: int = 5
    backoff_s: float = 0.5
    max_wait_s: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff_s < 0 or self.max_wait_s < 0:
            raise ValueError("retries, backoff_s and max_wait_s must not be negative")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter}")

    def may_resend(self, method: str, *, sent: bool, status: int | None = None) -> bool:
        """Whether a failed attempt may be made again (attempts aside). ``sent``: the request
        may have reached the service (it was written out, or a proxy answered)."""
        if status in REFUSED_STATUSES or not sent:
            return True
        idempotent = method.upper() in IDEMPOTENT_METHODS
        return idempotent and (status is None or status in UNSURE_STATUSES)

    def wait(self, attempt: int, retry_after_header: str | None = None) -> float:
        """Seconds before attempt ``attempt + 1``: the service's ``Retry-After`` when it sent
        one, else the back-off with jitter; at most ``max_wait_s``."""
        asked = retry_after(retry_after_header)
        if asked is None:
            full = self.backoff_s * 2**attempt
            asked = full * (1 - self.jitter * random.random())
        return min(asked, self.max_wait_s)
