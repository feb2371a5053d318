"""Fixtures of the store suite: a backend per test, a 2,000-item gallery per module."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from service.store import (
    FaissSqliteStore,
)

from .support import (
    BACKENDS,
    DIM,
    Backend,
    Gallery,
)


@pytest.fixture(scope="module")
def lite_db(tmp_path_factory: pytest.TempPathFactory):
    """One Milvus Lite database for the module (each test takes a collection prefix of its own).

    A store kept open for the whole module keeps the embedded server running between tests.
    """
    db = tmp_path_factory.mktemp("milvus") / "milvus.db"
    keeper = Backend("milvus", db.parent, db).open()
    yield db
    keeper.close()


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


def make_backend(request: pytest.FixtureRequest, name: str, root: Path) -> Backend:
    db = None
    if name == "milvus":
        db = request.getfixturevalue("lite_db")
    elif name == "milvus-server":
        db = request.getfixturevalue("milvus_server")
    return Backend(name, root, db)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path):
    b = make_backend(request, request.param, tmp_path)
    yield b
    b.cleanup()


@pytest.fixture(scope="module", params=BACKENDS)
def gallery(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    g = Gallery(make_backend(request, request.param, tmp_path_factory.mktemp("gallery")))
    yield g
    g.store.close()
    g.backend.cleanup()


@pytest.fixture
def store(backend: Backend):
    s = backend.open()
    yield s
    s.close()


@pytest.fixture
def faiss_store(tmp_path: Path):
    s = FaissSqliteStore(tmp_path, dim=DIM)
    yield s
    s.close()
