"""Which errors are a user's to fix: ``sona`` prints those as one line and exits 2.

A ``ValueError`` alone does not make a user error (a bug raises them too, and keeps its
traceback). A user error is one of:

- ``UserError``, raised by a command for a mistake it found;
- ``FileNotFoundError``: a path the user gave is not there;
- an error a library raises on purpose for bad input (a file that is no checkpoint, a dataset
  folder of another layout, footage the detector cannot use, a service that refused a request),
  named in ``LIBRARY_USER_ERRORS``. They are looked up by name among the modules already
  imported (an error of a module the command never imported cannot have been raised), so
  this module loads none of them and ``sona --help`` stays free of torch;
- a ``ValueError`` raised inside ``with user_input():``, the blocks where a command hands the
  user's options to a library that validates them (a model configuration, a CSV of crops).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["LIBRARY_USER_ERRORS", "UserError", "is_user_error", "user_input"]


class UserError(Exception):
    """A mistake the user can fix (a bad option, a missing file); its message is one line."""


#: (module, class) of the errors libraries raise for bad input, not for bugs.
LIBRARY_USER_ERRORS = (
    ("client.api", "SonaError"),
    ("footage.errors", "FootageError"),
    ("model.backbone", "BackboneWeightsError"),
    ("model.checkpoint", "CheckpointError"),
    ("model.device", "DeviceError"),
    ("model.loading", "EncoderError"),
    ("service.imaging", "ImageError"),
    ("training.datasets.base", "DatasetError"),
    ("training.finetune", "FinetuneError"),
    ("training.tracks", "TrackSetError"),
)


def is_user_error(exc: BaseException) -> bool:
    if isinstance(exc, UserError | FileNotFoundError):
        return True
    for module, name in LIBRARY_USER_ERRORS:
        kind = getattr(sys.modules.get(module), name, None)
        if kind is not None and isinstance(exc, kind):
            return True
    return False


@contextmanager
def user_input() -> Iterator[None]:
    """A ``ValueError`` in this block is the user's options refused: a ``UserError``."""
    try:
        yield
    except ValueError as exc:
        if is_user_error(exc):
            raise
        raise UserError(str(exc)) from exc
