"""The one error a command raises for a user's mistake: ``sona`` prints it and exits 2."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A mistake the user can fix (a bad option, a missing file); its message is one line."""
