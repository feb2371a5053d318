"""The Milvus collection: its schema and indexes, created once and checked on every open.

One collection, ``<prefix>items``, for every gallery, its items in a partition per gallery and
UTC day (``partitions.py``; see the store's module doc for why). Collections made before day
partitions have ``gallery`` as their partition key: they open as they are (``day_partitions``
False). Several replicas may start at once: whoever loses the
race to create the collection or its indexes uses the winner's; a collection left without
indexes (its creator died in between) gets them here.

Milvus 2.3 and 2.4 servers are common in the field, so nothing here needs more: no nullable
fields (2.5; an absent label is stored as ""), and the scalar indexes that speed up camera
and time filters are INVERTED where the server has it (2.4) and Trie / STL_SORT otherwise,
never a reason to refuse to start (filters are exact without them, only slower).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from pymilvus import DataType, MilvusClient, MilvusException

from ..base import SOURCE_MAX, StoreError

__all__ = [
    "CONSISTENCY_LEVELS",
    "META_FIELDS",
    "PROVENANCE_FIELDS",
    "TEXT_MAX",
    "Opened",
    "open_collection",
    "refused",
    "schema",
]

log = logging.getLogger(__name__)

#: Longest camera id, identity or track label, in UTF-8 bytes (the API allows 128 characters).
TEXT_MAX = 1024
_ID_MAX = 64
#: Milvus's consistency levels, strongest first.
CONSISTENCY_LEVELS = ("Strong", "Session", "Bounded", "Eventually")
#: The fields an item's metadata is read from.
META_FIELDS = [
    "item_id",
    "gallery",
    "camera_id",
    "timestamp",
    "identity",
    "track_id",
    "image_type",
    "created_at",
    "seq",
]
#: Provenance, absent from collections made before it: ``source`` ("" for None), ``frame``
#: (-1 for None), ``box`` ("x,y,w,h", "" for None). Milvus 2.3-2.5 cannot add a field to a
#: collection, so an older collection opens without them and refuses items that carry them.
PROVENANCE_FIELDS = ["source", "frame", "box"]


def schema(dim: int, gallery_partition_key: bool = False) -> Any:
    """The collection's fields; ``gallery_partition_key``: the layout from before day
    partitions (for tests and benchmarks of collections made then)."""
    s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("item_id", DataType.VARCHAR, is_primary=True, max_length=_ID_MAX)
    s.add_field(
        "gallery", DataType.VARCHAR, max_length=64, is_partition_key=gallery_partition_key
    )
    s.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
    s.add_field("camera_id", DataType.VARCHAR, max_length=TEXT_MAX)
    s.add_field("ts", DataType.DOUBLE)
    s.add_field("timestamp", DataType.VARCHAR, max_length=64)
    s.add_field("identity", DataType.VARCHAR, max_length=TEXT_MAX)  # "" for None
    s.add_field("track_id", DataType.VARCHAR, max_length=TEXT_MAX)
    s.add_field("image_type", DataType.VARCHAR, max_length=255)
    s.add_field("crop_key", DataType.VARCHAR, max_length=512)
    s.add_field("created_at", DataType.VARCHAR, max_length=64)
    s.add_field("seq", DataType.INT64)
    s.add_field("source", DataType.VARCHAR, max_length=SOURCE_MAX)
    s.add_field("frame", DataType.INT64)
    s.add_field("box", DataType.VARCHAR, max_length=64)
    return s


def _vector_index(client: MilvusClient, index_type: str) -> Any:
    params = client.prepare_index_params()
    vector_params: dict[str, Any] = {}
    if index_type == "HNSW":
        vector_params = {"M": 32, "efConstruction": 256}
    elif index_type == "IVF_FLAT":
        vector_params = {"nlist": 1024}
    params.add_index(
        field_name="embedding", index_type=index_type, metric_type="IP", params=vector_params
    )
    return params


def _scalar_indexes(c: MilvusClient, name: str, t: float) -> None:
    """Indexes on camera and time, the best kind the server has; none is not an error."""
    for field, kinds in (("camera_id", ("INVERTED", "Trie")), ("ts", ("INVERTED", "STL_SORT"))):
        if c.list_indexes(name, field_name=field, timeout=t):
            continue
        for kind in kinds:
            params = c.prepare_index_params()
            params.add_index(field_name=field, index_type=kind)
            try:
                c.create_index(name, params, timeout=t, sync=False)
                break
            except MilvusException as e:
                log.info("collection %s: no %s index on %s (%s)", name, kind, field, e.message)


def refused(e: MilvusException) -> bool:
    """Whether Milvus refused the request itself (bad parameters, a schema it cannot take), as
    opposed to failing to serve it (not ready, overloaded, unreachable): codes 1100-1199 are
    Milvus's parameter errors; 5 (IllegalArgument) is the same before Milvus 2.3."""
    code = getattr(e, "code", None)
    return isinstance(code, int) and (1100 <= code < 1200 or code == 5)


@dataclass(frozen=True)
class Opened:
    """What an opened collection has: its vector index kind, whether it stores provenance,
    and whether its items go to day partitions (False: ``gallery`` is its partition key)."""

    index_type: str
    provenance: bool
    day_partitions: bool = True


def open_collection(
    c: MilvusClient, name: str, dim: int, requested: str, t: float, consistency: str
) -> Opened:
    """Create the collection (indexes, ``consistency``) or check the existing one; load it.
    An existing collection keeps its own vector index kind."""
    if not c.has_collection(name, timeout=t):
        try:
            c.create_collection(name, schema=schema(dim), consistency_level=consistency, timeout=t)
        except MilvusException:
            if not c.has_collection(name, timeout=t):
                raise  # not a race with another replica creating it
    info = c.describe_collection(name, timeout=t)
    fields = {f["name"]: f for f in info["fields"]}
    missing = sorted({*META_FIELDS, "embedding", "ts", "crop_key"} - set(fields))
    if missing:
        raise StoreError(
            f"collection {name} exists with another schema (missing {missing}): "
            "use another collection prefix"
        )
    held = int(fields["embedding"].get("params", {}).get("dim", 0))
    if held != dim:
        raise StoreError(f"collection {name} holds {held}-d embeddings, not {dim}-d")
    if not c.list_indexes(name, field_name="embedding", timeout=t):
        try:
            # sync=False: pymilvus would poll each new index with 0.5 s sleeps; the
            # collection is empty and load_collection waits for what it needs
            c.create_index(name, _vector_index(c, requested), timeout=t, sync=False)
        except MilvusException:
            if not c.list_indexes(name, field_name="embedding", timeout=t):
                raise
    _scalar_indexes(c, name, t)
    index_type = requested
    with contextlib.suppress(MilvusException, KeyError, IndexError):
        names = c.list_indexes(name, field_name="embedding", timeout=t)
        index_type = str(c.describe_index(name, names[0], timeout=t)["index_type"]).upper()
    if index_type != requested:
        log.warning(
            "collection %s has a %s index (not %s): keeping it", name, index_type, requested
        )
    provenance = set(PROVENANCE_FIELDS) <= set(fields)
    if not provenance:
        log.warning(
            "collection %s predates provenance (source, frame, box): items that carry it are "
            "refused; export the galleries and import them under a new collection prefix",
            name,
        )
    day_partitions = not fields["gallery"].get("is_partition_key", False)
    if not day_partitions:
        log.info(
            "collection %s has gallery as its partition key: items are removed one by one "
            "(new collections drop a whole day's partition)",
            name,
        )
    c.load_collection(name, timeout=t)  # also reloads a partition a crash left released
    return Opened(index_type, provenance, day_partitions)
