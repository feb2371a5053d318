"""The footage pipeline's one error for bad input: a ``ValueError``, so ``sona`` prints its
one-line message and exits 2."""

from __future__ import annotations

__all__ = ["FootageError"]


class FootageError(ValueError):
    """Bad footage or options (unreadable or truncated video, a det.txt of another video,
    no people); the message is one line and says what was indexed, if anything."""
