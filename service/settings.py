"""Service configuration from ``SONA_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "parse_retention"]

MiB = 1024 * 1024
_GALLERY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def parse_retention(text: str) -> dict[str, float]:
    """``lobby=7,entrance=30`` -> {"lobby": 7.0, "entrance": 30.0}; a ValueError says what is
    wrong."""
    days: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        gallery, sep, value = part.partition("=")
        gallery = gallery.strip()
        try:
            number = float(value) if sep else 0.0
        except ValueError:
            number = 0.0
        if not _GALLERY.fullmatch(gallery) or not number > 0 or number == float("inf"):
            raise ValueError(f"expected gallery=days with days > 0, such as lobby=7, not {part!r}")
        days[gallery] = number
    return days


class Settings(BaseSettings):
    """Every knob of the service. ``SONA_CHECKPOINT=/models/sona.pt`` sets ``checkpoint``."""

    model_config = SettingsConfigDict(env_prefix="SONA_", frozen=True)

    checkpoint: Path | None = Field(None, description="SONA-Net checkpoint to serve")
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda:N")
    data_dir: Path = Field(Path("data"), description="gallery database, crops and index")
    store: Literal["faiss", "milvus"] = Field(
        "faiss", description="gallery backend: faiss (embedded, one process) or milvus (shared)"
    )
    index: str = Field(
        "auto",
        description="faiss store: auto (exact below 20,000 items per gallery, then an IVF-PQ "
        "candidate index re-scored exactly; camera and time filters stay exact), Flat (always "
        "exact), or another FAISS factory string (HNSW32, IVF4096,Flat, ...)",
    )
    milvus_uri: str = Field(
        "",
        description="Milvus server (http://host:19530) or a local .db file (Milvus Lite); "
        "empty: <data_dir>/milvus.db",
    )
    milvus_token: str = Field(
        "", description="Milvus credentials: user:password or an API key", repr=False
    )
    milvus_collection_prefix: str = Field("sona_", description="Milvus collection name prefix")
    milvus_index: str = Field(
        "",
        description="Milvus vector index FLAT, IVF_FLAT, HNSW or AUTOINDEX; empty: FLAT on "
        "Milvus Lite, HNSW on a server",
    )
    milvus_consistency: Literal["Strong", "Session", "Bounded", "Eventually"] = Field(
        "Session",
        description="Milvus reads: Session (this replica's writes at once, others' within "
        "Milvus's time tick), Strong (every replica's acknowledged writes, at the cost of a "
        "wait for the time tick), Bounded, Eventually",
    )
    milvus_ef: int = Field(
        32,  # the Milvus store's EF_SEARCH
        ge=1,
        le=4096,
        description="Milvus HNSW: ef of a search without a camera or time filter (raised to "
        "the results asked for; a filter raises it by the inverse of the share it passes)",
    )
    milvus_timeout_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="Milvus: how long one call may wait on the server before the request gets "
        "503 with Retry-After",
    )
    crops_dir: Path | None = Field(
        None,
        description="milvus: crop folder every replica mounts (required with a Milvus server; "
        "Milvus Lite: default beside its .db file)",
    )
    max_batch_size: int = Field(32, ge=1, le=1024, description="images per forward pass")
    max_wait_ms: float = Field(5.0, ge=0, le=1000, description="how long a batch waits for company")
    queue_size: int = Field(
        512, ge=1, description="images waiting to be embedded before 503 Retry-After"
    )
    backend: Literal["auto", "torch", "onnx", "openvino"] = Field(
        "auto",
        description="how the network runs: torch; onnx (ONNX Runtime) or openvino, running "
        "SONA_ONNX_MODEL or <checkpoint>.int8.onnx; or auto: an export when there is one, in "
        "the runtime a start-up probe finds fastest on this CPU, else torch",
    )
    onnx_model: Path | None = Field(
        None,
        description="an export of SONA_CHECKPOINT by sona export (--int8: the fastest on a CPU)",
    )
    amp: bool = Field(
        True,
        description="bf16 where the hardware runs it natively: torch autocast on CUDA and on a "
        "CPU with bf16 instructions; openvino runs an fp32 export in bf16 there",
    )
    max_upload_bytes: int = Field(10 * MiB, ge=1024, description="per image")
    max_images_per_request: int = Field(64, ge=1, le=1024)
    max_image_side: int = Field(4096, ge=64)
    max_image_pixels: int = Field(16_000_000, ge=4096)
    max_request_pixels: int = Field(
        64_000_000, ge=4096, description="declared pixels of all images of one request"
    )
    decode_pixels: int = Field(
        64_000_000,
        ge=4096,
        description="declared pixels being decoded at once in the process; past it a decode "
        "waits decode_wait_s, then the request gets 503 with Retry-After",
    )
    decode_wait_s: float = Field(2.0, ge=0, le=60)
    body_timeout_s: float = Field(
        120.0, gt=0, description="time to receive a whole request body: 408 past it"
    )
    header_timeout_s: float = Field(
        30.0, gt=0, description="time to receive a request's line and headers: 408 past it"
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="request line and headers together: 431 past it"
    )
    public_pages: bool = Field(
        True,
        description="with API keys set, the search page, its files and the API docs stay open "
        "(no data); false: they need the key too",
    )
    query_ttl_s: float = Field(900.0, gt=0, description="how long a query_id stays usable")
    query_cache_size: int = Field(20_000, ge=1)
    max_k: int = Field(1000, ge=1)
    log_format: Literal["text", "json"] = Field(
        "text",
        description="sona serve's log lines: text (like uvicorn's) or json (one object a line, "
        "for log shippers)",
    )
    api_keys: str = Field(
        "",
        description="comma-separated API keys, each with the admin role; with no key here and "
        "no key file, the service asks for no key",
        repr=False,
    )
    keys_file: Path | None = Field(
        None,
        description="key file of sona keys add (roles, galleries, hashes only); empty: "
        "<data_dir>/keys.json. Re-read when it changes",
    )
    audit_log: Path | None = Field(
        None,
        description="append-only audit trail, one JSON line a request; empty: <data_dir>/audit.log",
    )
    audit_max_bytes: int = Field(
        64 * MiB, ge=64 * 1024, description="the audit log rotates past this size"
    )
    audit_keep: int = Field(10, ge=1, le=1000, description="rotated audit files kept")
    retention_days: float | None = Field(
        None,
        gt=0,
        description="items whose timestamp is older are deleted, crops included; empty: kept",
    )
    retention_days_by_gallery: str = Field(
        "",
        description="per-gallery retention overriding SONA_RETENTION_DAYS: gallery=days, "
        "comma-separated, e.g. lobby=7,entrance=30",
    )
    retention_sweep_s: float = Field(
        3600.0, gt=0, description="seconds between retention sweeps (one runs at start-up)"
    )
    retention_batch: int = Field(
        1000, ge=1, le=100_000, description="items deleted per step of a retention sweep"
    )

    @field_validator(
        "checkpoint",
        "crops_dir",
        "onnx_model",
        "keys_file",
        "audit_log",
        "retention_days",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("index")
    @classmethod
    def _index_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("index must be auto or a FAISS factory string such as Flat")
        return value.strip()

    @field_validator("retention_days_by_gallery")
    @classmethod
    def _retention_map(cls, value: str) -> str:
        parse_retention(value)
        return value

    @cached_property
    def retention_by_gallery(self) -> dict[str, float]:
        return parse_retention(self.retention_days_by_gallery)

    @property
    def keys_path(self) -> Path:
        return self.keys_file or self.data_dir / "keys.json"

    @property
    def audit_path(self) -> Path:
        return self.audit_log or self.data_dir / "audit.log"

    @cached_property
    def keys(self) -> tuple[bytes, ...]:
        return tuple(k.strip().encode() for k in self.api_keys.split(",") if k.strip())
