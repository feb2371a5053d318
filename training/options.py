"""The choices the command line offers for training and evaluation, in a module free of torch
so that ``sona --help`` can list them without loading it."""

from __future__ import annotations

__all__ = ["DEMO_EPOCHS", "DISTANCES", "EPOCH_UNITS"]

#: Distances ``sona eval`` ranks a gallery by.
DISTANCES = ("euclidean", "cosine")
#: What one training epoch counts: every identity once, or every image once.
EPOCH_UNITS = ("identities", "images")
#: Epochs of the demo's training: the tiny preset's warm-up and a few epochs at full rate, so
#: that a fresh clone is searchable in minutes or less; 40 (the preset's) for a better toy.
DEMO_EPOCHS = 8
