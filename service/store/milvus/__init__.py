"""The scale-out store: Milvus holds vectors and metadata, a shared folder the crops.

Importing it needs pymilvus (``pip install 'sona-reid[milvus]'``); the embedded default does not.
"""

from __future__ import annotations

from .store import MAX_TOPK, MilvusStore, MilvusUnavailableError

__all__ = ["MAX_TOPK", "MilvusStore", "MilvusUnavailableError"]
