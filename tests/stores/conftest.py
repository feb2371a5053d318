"""Fixtures of the store suite: a backend per test, a 2,000-item gallery per module."""

from __future__ import annotations

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
