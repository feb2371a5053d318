"""A validation split carved from the training identities, for choosing a checkpoint.

Choosing ``best.pt`` by test-set mAP reports a maximum over test evaluations, not a result.
Held-out training identities give a query/gallery split with the test protocol's shape (per
identity and camera, one image is a query and the rest are gallery), so the best epoch is
chosen without looking at the test set. The remaining training identities are relabelled
0..n-1 for the classifiers.
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict

from .base import DatasetError, ImageRecord, ReIDDataset

__all__ = ["hold_out_identities"]


def hold_out_identities(
    data: ReIDDataset, identities: int, *, seed: int = 0
) -> tuple[ReIDDataset, ReIDDataset]:
    """(``data`` with ``identities`` fewer training identities, the validation split).

    Only identities seen by at least two cameras can be held out (a query needs a match in
    another camera); they are drawn at random with ``seed``.
    """
    by_pid: dict[int, list[ImageRecord]] = defaultdict(list)
    for record in data.train:
        by_pid[record.pid].append(record)
    eligible = sorted(pid for pid, rs in by_pid.items() if len({r.camid for r in rs}) > 1)
    if identities < 1 or identities > len(eligible) or identities >= len(by_pid) - 1:
        raise DatasetError(
            f"cannot hold out {identities} validation identities: {data.name} has "
            f"{len(by_pid)} training identities, {len(eligible)} of them seen by two or more "
            "cameras, and training needs the rest"
        )
    rng = random.Random(seed)
    held = set(rng.sample(eligible, identities))
    query, gallery = [], []
    for pid in sorted(held):
        by_camera: dict[int, list[ImageRecord]] = defaultdict(list)
        for record in by_pid[pid]:
            by_camera[record.camid].append(record)
        for camid in sorted(by_camera):
            records = by_camera[camid]
            pick = rng.randrange(len(records))
            query.append(records[pick])
            gallery += records[:pick] + records[pick + 1 :]
    relabel = {pid: new for new, pid in enumerate(sorted(set(by_pid) - held))}
    train = [r._replace(pid=relabel[r.pid]) for r in data.train if r.pid in relabel]
    validation = ReIDDataset(f"{data.name} (validation)", data.root, [], query, gallery)
    return dataclasses.replace(data, train=train), validation
