"""Keys with roles and galleries against a real ``sona serve``: every route of the OpenAPI
schema with every role, a key limited to one gallery, revocation without a restart, and the
key never written anywhere."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.milvus_support import milvus_env
from tests.service_support import SONA, Server, jpeg, make_checkpoint

ENV_KEY = "env-admin-secret"
FORM = {"camera_id": "c1", "timestamp": "2024-01-01T00:00:00Z", "track_id": "t1"}
NO_ITEM = "0" * 32

#: The role each route needs, written out here independently of the service's own table:
#: a route of the schema missing here fails ``test_every_route_of_the_schema_is_covered``.
EXPECTED: dict[tuple[str, str], str | None] = {
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    ("POST", "/embed"): "search",
    ("GET", "/search"): "search",
    ("POST", "/search"): "search",
    ("GET", "/gallery"): "search",
    ("GET", "/gallery/{item_id}"): "search",
    ("GET", "/gallery/{item_id}/image"): "search",
    ("GET", "/gallery/tracks"): "search",
    ("GET", "/gallery/tracks/{track_id}"): "search",
    ("POST", "/gallery"): "ingest",
    ("DELETE", "/gallery/{item_id}"): "admin",
    ("DELETE", "/gallery/tracks/{track_id}"): "admin",
    ("DELETE", "/gallery"): "admin",
    ("GET", "/metrics"): "admin",
}
ROLES = ("search", "ingest", "admin")


def sona(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SONA, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


def add_key(keys_file: Path, name: str, role: str, *galleries: str) -> str:
    extra = [a for g in galleries for a in ("--gallery", g)]
    done = sona("keys", "add", name, "--role", role, "--keys-file", str(keys_file), *extra)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and len(lines[0]) > 40, done.stdout  # the key, once, alone
    return lines[0]


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


@pytest.fixture(scope="module", params=["faiss", "milvus-server"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A service with keys of every role, on each store; three galleries of two items."""
    root = tmp_path_factory.mktemp("security")
    store = {}
    if request.param == "milvus-server":
        store = milvus_env(request.getfixturevalue("milvus_server_uri"), root / "crops")
    keys_file = root / "keys.json"
    keys = {role: add_key(keys_file, f"{role}-all", role) for role in ROLES}
    keys["lobby-search"] = add_key(keys_file, "lobby-search", "search", "lobby")
    keys["lobby-ingest"] = add_key(keys_file, "lobby-ingest", "ingest", "lobby")
    keys["lobby-admin"] = add_key(keys_file, "lobby-admin", "admin", "lobby")
    server = Server(
        make_checkpoint(root / "tiny.pt"),
        root / "data",
        log_level="info",
        SONA_KEYS_FILE=str(keys_file),
        SONA_API_KEYS=ENV_KEY,
        **store,
    ).start(timeout=180)
    items = {}
    with server.client(headers=bearer(keys["admin"])) as c:
        for gallery, seed in (("lobby", 1), ("vault", 2), ("default", 3)):
            r = c.post(
                "/gallery",
                params={"gallery": gallery},
                data=FORM,
                files=[("images", (f"{i}.jpg", jpeg(seed * 10 + i), "image/jpeg")) for i in (0, 1)],
            )
            assert r.status_code == 201, r.text
            items[gallery] = [i["item_id"] for i in r.json()["items"]]
    yield server, keys, items, keys_file
    server.stop()


def call(c: httpx.Client, method: str, route: str, items: dict, key: str | None) -> httpx.Response:
    """One request for ``route`` that a key of the right role may make, changing nothing that
    later requests need (deletes name no item)."""
    item = items["lobby"][0]
    path = route.replace("{track_id}", "no-such-track" if method == "DELETE" else "t1")
    path = path.replace("{item_id}", NO_ITEM if method == "DELETE" else item)
    params: dict = {"gallery": "lobby"}
    files = data = None
    if route == "/search" and method == "GET":
        params["item_id"] = item
    if method == "POST":
        field = "images" if route == "/gallery" else "image"
        files = [(field, ("a.jpg", jpeg(99), "image/jpeg"))]
        data = FORM if route == "/gallery" else None
    if route == "/gallery" and method == "DELETE":
        params.update(camera_id="nowhere", before="2000-01-01T00:00:00Z")
    if route in ("/embed", "/metrics", "/healthz", "/readyz", "/gallery/{item_id}"):
        params = {}
    return c.request(method, path, params=params, files=files, data=data, headers=bearer(key))


def schema_routes(server: Server, key: str) -> list[tuple[str, str]]:
    with server.client(headers=bearer(key)) as c:
        paths = c.get("/openapi.json").json()["paths"]
    return sorted((m.upper(), p) for p, ops in paths.items() for m in ops)


def test_every_route_of_the_schema_is_covered(site) -> None:
    server, keys, _, _ = site
    missing = [r for r in schema_routes(server, keys["admin"]) if r not in EXPECTED]
    assert not missing, f"routes without an expected role in this test: {missing}"


@pytest.mark.parametrize("who", [None, "wrong", *ROLES])
def test_each_role_on_each_route(site, who: str | None) -> None:
    server, keys, items, _ = site
    key = {None: None, "wrong": "sona_not-a-key"}.get(who, keys.get(who or ""))
    with server.client() as c:
        for method, route in schema_routes(server, keys["admin"]):
            needed = EXPECTED[(method, route)]
            r = call(c, method, route, items, key)
            what = f"{method} {route} with {who}: {r.status_code} {r.text[:300]}"
            if needed is None:
                assert r.status_code == 200, what
            elif who in (None, "wrong"):
                assert r.status_code == 401, what
                assert r.headers["content-type"].startswith("application/problem+json")
            elif ROLES.index(who) < ROLES.index(needed):
                assert r.status_code == 403, what
                body = r.json()
                assert body["required_role"] == needed and needed in body["detail"], what
            else:
                assert r.status_code not in (401, 403) and r.status_code < 500, what


def test_a_wrong_role_is_refused_before_the_body_is_read(site) -> None:
    """A search key posting 500 MB to POST /gallery: 403 after the headers alone."""
    import socket

    server, keys, _, _ = site
    head = (
        f"POST /gallery HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {keys['search']}\r\n"
        f"Content-Length: {500 * 2**20}\r\nContent-Type: multipart/form-data; boundary=b\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        s.sendall(head)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 403 " in status_line and b"connection: close" in rest.lower()


def test_the_env_keys_are_admin_keys(site) -> None:
    server, _, items, _ = site
    with server.client(headers=bearer(ENV_KEY)) as c:
        assert c.get("/metrics").status_code == 200
        assert c.get(f"/gallery/{items['vault'][0]}").status_code == 200


def test_a_key_limited_to_a_gallery_sees_only_that_gallery(site) -> None:
    server, keys, items, _ = site
    with server.client(headers=bearer(keys["lobby-search"])) as c:
        counts = c.get("/gallery").json()
        assert [g["gallery"] for g in counts["galleries"]] == ["lobby"]
        assert counts["total"] == counts["galleries"][0]["count"] >= 2
        lobby, vault = items["lobby"][0], items["vault"][0]
        assert c.get(f"/gallery/{lobby}").status_code == 200
        assert c.get(f"/gallery/{lobby}/image").status_code == 200
        mine = c.get("/search", params={"item_id": lobby}).json()
        others = set(items["vault"]) | set(items["default"])
        assert mine["gallery"] == "lobby" and not {r["item_id"] for r in mine["results"]} & others
        # another gallery's item answers as one that does not exist, word for word
        gone = c.get(f"/gallery/{NO_ITEM}").json()
        hidden = c.get(f"/gallery/{vault}").json()
        assert hidden["status"] == 404 and hidden["type"] == gone["type"]
        assert hidden["detail"] == gone["detail"].replace(NO_ITEM, vault)
        assert c.get(f"/gallery/{vault}/image").status_code == 404
        assert c.get("/search", params={"item_id": vault}).status_code == 404
        assert c.get("/search", params={"item_id": lobby, "gallery": "vault"}).status_code == 404
        # a gallery it does not see, existing or not, gets one and the same answer
        for gallery in ("vault", "no-such-gallery"):
            r = c.get("/gallery/tracks/t1", params={"gallery": gallery})
            assert r.status_code == 404
            assert r.json()["detail"] == f"gallery {gallery!r} does not exist"
        assert c.get("/gallery/tracks/t1").status_code == 404  # default: not its gallery
        assert c.get("/gallery/tracks/t1", params={"gallery": "lobby"}).status_code == 200
        r = c.post("/search", files={"image": ("a.jpg", jpeg(5), "image/jpeg")})
        assert r.status_code == 404  # the default gallery
    with server.client(headers=bearer(keys["lobby-ingest"])) as c:
        r = c.post(
            "/gallery",
            params={"gallery": "vault"},
            data=FORM,
            files={"images": ("a.jpg", jpeg(7), "image/jpeg")},
        )
        assert r.status_code == 404
    with server.client(headers=bearer(keys["lobby-admin"])) as c:
        assert c.delete(f"/gallery/{vault}").status_code == 404
        r = c.get("/metrics")
        assert r.status_code == 403 and r.json()["required_role"] == "admin"
    with server.client(headers=bearer(keys["admin"])) as c:
        assert c.get(f"/gallery/{vault}").status_code == 200  # still there


def test_keys_added_and_revoked_count_without_a_restart(site) -> None:
    server, _, items, keys_file = site
    key = add_key(keys_file, "temp", "search")
    with server.client(headers=bearer(key)) as c:
        assert c.get(f"/gallery/{items['lobby'][0]}").status_code == 200
        done = sona("keys", "revoke", "temp", "--keys-file", str(keys_file))
        assert done.returncode == 0, done.stderr
        assert c.get(f"/gallery/{items['lobby'][0]}").status_code == 401
    listed = sona("keys", "list", "--keys-file", str(keys_file)).stdout
    assert "temp" in listed and "revoked" in listed and key not in listed


def test_the_key_file_holds_hashes_only_and_is_private(site) -> None:
    _, keys, _, keys_file = site
    text = keys_file.read_text()
    assert keys_file.stat().st_mode & 0o777 == 0o600
    assert not any(k in text for k in keys.values())
    assert len(json.loads(text)["keys"]) >= 6


def test_no_key_in_the_log_the_audit_trail_or_an_answer(site) -> None:
    server, keys, _, _ = site
    with server.client() as c:
        r = c.get("/gallery", headers=bearer("sona_a-wrong-key-that-must-not-be-echoed"))
        assert r.status_code == 401 and "must-not-be-echoed" not in r.text
    written = server.log.read_text() + (server.log.parent / "data" / "audit.log").read_text()
    secrets = [*keys.values(), ENV_KEY, "must-not-be-echoed"]
    assert not [k for k in secrets if k in written]


def test_bad_key_commands_are_one_line_and_status_2(tmp_path: Path) -> None:
    keys_file = str(tmp_path / "keys.json")
    for args in (
        ("keys", "add", "x", "--role", "search", "--gallery", "../etc"),
        ("keys", "add", "bad name", "--role", "search"),
        ("keys", "revoke", "nobody"),
        ("keys", "add", "x", "--role", "root"),
    ):
        done = sona(*args, "--keys-file", keys_file)
        assert done.returncode == 2, (args, done.stderr)
        last = done.stderr.strip().splitlines()[-1]  # argparse's usage lines may precede it
        assert "Traceback" not in done.stderr and last.startswith("sona keys"), done.stderr
    assert not Path(keys_file).exists()


# ---------------------------------------------------------------------------------------------
# the audit trail


def audit_lines(server: Server) -> dict[str, dict]:
    """The audit records of ``server`` by request id."""
    text = (server.log.parent / "data" / "audit.log").read_text()
    records = [json.loads(line) for line in text.splitlines()]
    return {r["request_id"]: r for r in records}


def test_the_audit_trail_says_who_searched_for_what(site) -> None:
    server, keys, items, _ = site
    lobby = items["lobby"][0]
    with server.client(headers=bearer(keys["lobby-search"])) as c:
        search = c.get(
            "/search",
            params={"item_id": lobby, "cameras": "c1", "since": "2023-01-01T00:00:00Z", "k": 5},
        )
        image = c.get(f"/gallery/{lobby}/image")
        track = c.get("/gallery/tracks/t1", params={"gallery": "lobby"})
        hidden = c.get("/gallery/tracks/t1", params={"gallery": "vault"})
        forbidden = c.post(
            "/gallery", data=FORM, files={"images": ("a.jpg", jpeg(1), "image/jpeg")}
        )
    with server.client(headers=bearer(keys["ingest"])) as c:
        added = c.post(
            "/gallery",
            params={"gallery": "vault"},
            data=FORM,
            files={"images": ("a.jpg", jpeg(8), "image/jpeg")},
        )
    with server.client() as c:
        refused = c.get(f"/gallery/{lobby}/image", headers={"X-Request-ID": "no-key-1"})
    trail = audit_lines(server)
    rid = lambda r: r.headers["x-request-id"]  # noqa: E731

    line = trail[rid(search)]
    assert line["key"] == "lobby-search" and line["role"] == "search"
    assert line["client"] == "127.0.0.1" and line["status"] == 200
    assert line["method"] == "GET" and line["route"] == "/search" and line["gallery"] == "lobby"
    assert line["filters"]["item_id"] == lobby and line["filters"]["cameras"] == ["c1"]
    assert line["filters"]["k"] == 5 and line["filters"]["since"].startswith("2023-01-01")
    assert line["items"] == [r["item_id"] for r in search.json()["results"]]
    assert datetime.fromisoformat(line["time"]).tzinfo is not None

    assert trail[rid(image)]["items"] == [lobby] and trail[rid(image)]["gallery"] == "lobby"
    assert trail[rid(track)]["items"] == [i["item_id"] for i in track.json()["items"]]
    assert trail[rid(hidden)]["status"] == 404 and trail[rid(hidden)]["gallery"] == "vault"
    assert trail[rid(forbidden)]["status"] == 403 and trail[rid(forbidden)]["key"] == "lobby-search"
    assert trail[rid(added)]["items"] == [i["item_id"] for i in added.json()["items"]]
    assert trail[rid(added)]["gallery"] == "vault" and trail[rid(added)]["status"] == 201
    assert trail["no-key-1"]["status"] == 401 and trail["no-key-1"]["key"] is None
    assert refused.status_code == 401

    done = sona("audit", "--log", str(server.log.parent / "data" / "audit.log"), "--item", lobby)
    found = [json.loads(line) for line in done.stdout.splitlines()]
    assert rid(search) in {r["request_id"] for r in found} and rid(image) in {
        r["request_id"] for r in found
    }
    assert all(lobby in r["items"] or r["filters"]["item_id"] == lobby for r in found)


def test_health_checks_and_metrics_stay_out_of_the_trail(site) -> None:
    server, keys, _, _ = site
    with server.client(headers=bearer(keys["admin"])) as c:
        ids = [c.get(p).headers["x-request-id"] for p in ("/healthz", "/metrics", "/readyz")]
    assert not set(ids) & set(audit_lines(server))
