"""A real Milvus server for the service tests that run ``sona serve`` on ``SONA_STORE=milvus``.

``tests/conftest.py`` registers ``milvus_server_uri`` for every module. Tests that use it carry
``milvus_server`` or ``milvus-server`` in their ids; the pytest session starts one embedded
server (two on one machine share internal ports, so two suites must not run at once).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.service_support import free_port

__all__ = ["milvus_env", "milvus_server_uri"]


@pytest.fixture(scope="session")
def milvus_server_uri(tmp_path_factory: pytest.TempPathFactory):
    """SONA_TEST_MILVUS_URI's server, or the one the ``milvus`` package embeds."""
    if os.environ.get("SONA_TEST_MILVUS_URI"):
        yield os.environ["SONA_TEST_MILVUS_URI"]
        return
    try:
        from milvus import MilvusServer
    except ImportError:
        pytest.skip("the milvus package (an embedded Milvus server) is not installed")
    server = MilvusServer()
    server.set_base_dir(str(tmp_path_factory.mktemp("milvus-server")))
    server.listen_port = free_port()
    try:
        server.start()
    except Exception as exc:  # the embedded binaries cannot run on this machine
        pytest.skip(f"the embedded Milvus server did not start: {exc}")
    yield f"http://127.0.0.1:{server.listen_port}"
    server.stop()


def milvus_env(uri: str, crops: Path) -> dict[str, str]:
    """``sona serve``'s settings for a Milvus server: collections of its own, shared crops."""
    return {
        "SONA_STORE": "milvus",
        "SONA_MILVUS_URI": uri,
        "SONA_MILVUS_COLLECTION_PREFIX": f"t{free_port()}_",
        "SONA_MILVUS_CONSISTENCY": "Strong",
        "SONA_CROPS_DIR": str(crops),
    }
