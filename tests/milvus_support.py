"""A real Milvus server for the service tests that run ``sona serve`` on ``SONA_STORE=milvus``.

``tests/conftest.py`` registers ``milvus_server_uri`` for every module. Tests that use it carry
``milvus_server`` or ``milvus-server`` in their ids; the pytest session starts one embedded
server (two on one machine share internal ports, so two suites must not run at once).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.service_support import free_port

__all__ = ["milvus_env", "milvus_server", "milvus_server_uri", "milvus_standalone"]


@pytest.fixture(scope="session")
def milvus_standalone(tmp_path_factory: pytest.TempPathFactory):
    """The Milvus standalone server the ``milvus`` package embeds, for the session: started on
    a free port under a temporary folder (about 15 s); None when SONA_TEST_MILVUS_URI names
    one. One at a time: two embedded servers on one machine share internal ports."""
    if os.environ.get("SONA_TEST_MILVUS_URI"):
        yield None
        return
    try:
        from milvus import MilvusServer
    except ImportError:
        pytest.skip("the milvus package (an embedded Milvus server) is not installed")
    server = MilvusServer()
    server.set_base_dir(str(tmp_path_factory.mktemp("milvus-server")))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        server.listen_port = s.getsockname()[1]
    try:
        server.start()
    except Exception as exc:  # the embedded binaries cannot run on this machine
        pytest.skip(f"the embedded Milvus server did not start: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def milvus_server(milvus_standalone):
    """A real Milvus server's URI: SONA_TEST_MILVUS_URI's, or the embedded one's."""
    if milvus_standalone is None:
        return os.environ["SONA_TEST_MILVUS_URI"]
    return f"http://127.0.0.1:{milvus_standalone.listen_port}"


@pytest.fixture(scope="session")
def milvus_server_uri(milvus_server: str) -> str:
    """The one Milvus server of the session, for the service tests (the store suite's too)."""
    return milvus_server


def milvus_env(uri: str, crops: Path) -> dict[str, str]:
    """``sona serve``'s settings for a Milvus server: collections of its own, shared crops."""
    return {
        "SONA_STORE": "milvus",
        "SONA_MILVUS_URI": uri,
        "SONA_MILVUS_COLLECTION_PREFIX": f"t{free_port()}_",
        "SONA_MILVUS_CONSISTENCY": "Strong",
        "SONA_CROPS_DIR": str(crops),
    }
