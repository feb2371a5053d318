"""The search page at ``/``: served open, self-contained, and driven in headless Chromium.

A real ``sona serve`` with API keys on holds a small gallery ingested over HTTP; Playwright
(Debian's ``/usr/bin/chromium``, no downloaded browser) uploads a crop, reads the k result
cards, clicks one and reads the new list. A screenshot goes to ``$SONA_TEST_ARTIFACTS`` (else
``test-artifacts/`` in the repository root) as ``web-search.png``.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.service_support import Server, make_checkpoint

KEY = "web-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
GALLERY = "lobby"
SIX = "six-cameras"  # a gallery whose camera list must not push Search below the fold
CAMERAS = ("cam-1", "cam-2", "cam-3")
IDENTITIES = 8
K = 10
START = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parent.parent


def person(identity: int, variant: int) -> bytes:
    """A 128 x 64 pedestrian-like crop: clothes colours per identity, background per variant."""
    ids = np.random.default_rng(identity)
    shirt, trousers = (tuple(int(c) for c in ids.integers(30, 230, 3)) for _ in range(2))
    skin = (int(ids.integers(150, 230)), int(ids.integers(110, 180)), int(ids.integers(80, 140)))
    rng = np.random.default_rng(1000 + 37 * identity + variant)
    back = tuple(int(c) for c in rng.integers(150, 235, 3))
    image = Image.new("RGB", (64, 128), back)
    draw = ImageDraw.Draw(image)
    dx, dy = (int(v) for v in rng.integers(-3, 4, 2))
    draw.rectangle((0, 100 + dy, 63, 127), fill=tuple(c - 40 for c in back))  # floor
    draw.ellipse((25 + dx, 8 + dy, 39 + dx, 24 + dy), fill=skin)  # head
    draw.rounded_rectangle((19 + dx, 25 + dy, 45 + dx, 68 + dy), radius=5, fill=shirt)
    draw.rectangle((21 + dx, 68 + dy, 31 + dx, 112 + dy), fill=trousers)  # legs
    draw.rectangle((33 + dx, 68 + dy, 43 + dx, 112 + dy), fill=trousers)
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (128, 64, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def sighting(identity: int, camera: int) -> dict[str, str]:
    """Metadata of one gallery crop: each camera sees everyone within its own 20 minutes."""
    name = CAMERAS[camera]
    return {
        "camera_id": name,
        "timestamp": (START + timedelta(minutes=20 * camera + identity)).isoformat(),
        "identity": f"p{identity:02d}",
        "track_id": f"{name}-t{identity}",
    }


def ingest(client: httpx.Client, gallery: str, crops: list[tuple[bytes, dict]]) -> list[str]:
    files = [("images", (f"crop{i}.jpg", data, "image/jpeg")) for i, (data, _) in enumerate(crops)]
    metadata = json.dumps([meta for _, meta in crops])
    response = client.post(
        "/gallery", params={"gallery": gallery}, files=files, data={"metadata": metadata}
    )
    assert response.status_code == 201, response.text
    return [item["item_id"] for item in response.json()["items"]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("web")
    checkpoint = make_checkpoint(root / "tiny.pt", demo=True)  # the page must say "demo"
    srv = Server(checkpoint, root / "data", SONA_API_KEYS=KEY, SONA_MAX_WAIT_MS="5").start()
    try:
        with srv.client(headers=AUTH) as client:
            crops = [
                (person(identity, camera), sighting(identity, camera))
                for camera in range(len(CAMERAS))
                for identity in range(IDENTITIES)
            ]
            ingest(client, GALLERY, crops)
            other = {"camera_id": "cam-9", "timestamp": START.isoformat()}
            ingest(client, "default", [(person(50, 0), other), (person(51, 0), other)])
            six = [
                (person(identity, camera), {"camera_id": f"gate-{camera}", "timestamp": ts})
                for camera in range(6)
                for identity, ts in ((1, START.isoformat()),)
            ]
            ingest(client, SIX, six)
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("SONA_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_page_is_open_and_self_contained(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert client.get("/gallery").status_code == 401  # the API itself still needs the key
        assets = {}
        for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
            response = client.get(f"/static/{name}")
            assert response.status_code == 200 and kind in response.headers["content-type"]
            assets[name] = response.text
        missing = client.get("/static/nope.js")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        assert "/" not in client.get("/openapi.json").json()["paths"]
    for text in (page.text, *assets.values()):
        assert not re.search(r"https?://|url\(\s*['\"]?//|@import", text), "loads from outside"
    assert 'src="static/app.js"' in page.text and 'href="static/style.css"' in page.text


def test_search_in_headless_chromium(server: Server, artifacts: Path) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is missing: pip install playwright"
    )
    expect = sync_api.expect
    query = person(0, 7)  # identity p00 seen anew
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:
        expected = client.post(
            "/search",
            params={"k": K, "gallery": GALLERY},
            files={"image": ("query.jpg", query, "image/jpeg")},
        ).json()["results"]
    assert len(expected) == K

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(
                viewport={"width": 1280, "height": 900}, locale="en-US", timezone_id="UTC"
            )
            page = context.new_page()
            page.set_default_timeout(15_000)
            errors: list[str] = []
            outside: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on(  # the page runs under its own Content-Security-Policy
                "console",
                lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
            )
            page.on(
                "request",
                lambda r: (
                    None
                    if r.url.startswith((server.url, "blob:", "data:"))
                    else outside.append(r.url)
                ),
            )
            page.goto(server.url + "/")

            # Without a key the page loads, and says why the API refused.
            message = page.locator("#message")
            message.wait_for(state="visible")
            assert "API key" in message.inner_text()

            page.fill("#api-key", KEY)
            page.click("#key-form button[type=submit]")
            page.wait_for_selector(f"#gallery option[value={GALLERY}]", state="attached")
            message.wait_for(state="hidden")
            page.select_option("#gallery", GALLERY)
            page.select_option("#k", str(K))

            cameras = page.locator("#cameras li[data-camera]")
            assert cameras.count() == len(CAMERAS)
            for index, name in enumerate(CAMERAS):
                row = cameras.nth(index)
                assert row.get_attribute("data-camera") == name
                assert row.locator(".camera-name").inner_text() == name
                assert row.locator(".camera-count").inner_text() == str(IDENTITIES)
            assert page.evaluate("sessionStorage.getItem('sona.apiKey')") == KEY

            page.set_input_files(
                "#file-input",
                files=[{"name": "query.jpg", "mimeType": "image/jpeg", "buffer": query}],
            )
            cards = page.locator("#results .card")
            expect(cards).to_have_count(K)
            first_ids = [cards.nth(i).get_attribute("data-item-id") for i in range(K)]
            assert first_ids == [r["item_id"] for r in expected]
            top = cards.first
            assert top.locator(".score").inner_text() == f"{expected[0]['score']:.3f}"
            assert top.locator(".camera-id").inner_text() == expected[0]["camera_id"]
            assert top.locator(".rank").inner_text() == "#1"
            assert "2024" in top.locator("time").inner_text()
            assert all(cards.nth(i).locator("img").get_attribute("alt") for i in range(K))
            assert re.search(r"search took [\d.]+ ms", page.inner_text("#results-meta"))

            clicked = first_ids[1]
            cards.nth(1).click()
            # The list is replaced at once: the clicked item gone means the new list is in.
            expect(page.locator(f'#results .card[data-item-id="{clicked}"]')).to_have_count(0)
            expect(cards).to_have_count(K)
            second_ids = [cards.nth(i).get_attribute("data-item-id") for i in range(cards.count())]
            assert len(second_ids) == K and clicked not in second_ids
            assert second_ids[0] != clicked and second_ids != first_ids
            with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:
                again = client.get(
                    "/search", params={"item_id": clicked, "k": K, "gallery": GALLERY}
                ).json()["results"]
            assert second_ids == [r["item_id"] for r in again]
            assert clicked in page.inner_text("#query-caption")

            # Every crop shown through an object URL, decoded, before the screenshot.
            images = page.locator("#results img, #query-preview")
            expect(page.locator("#results img:not([src^='blob:'])")).to_have_count(0)
            expect(page.locator("#query-preview")).to_have_attribute("src", re.compile("^blob:"))
            decoded = "imgs => Promise.all(imgs.map(i => i.decode())).then(() => imgs.length)"
            assert images.evaluate_all(decoded) == K + 1
            page.screenshot(path=str(artifacts / "web-search.png"), full_page=True)

            # Filters: one per identity, within cam-2's twenty minutes (the browser is on UTC).
            page.check("#group-by")
            page.fill("#since", "2024-05-01T09:20:00")
            page.fill("#until", "2024-05-01T09:39:59")
            results = page.locator("#results")
            expect(results).to_have_attribute("data-params", re.compile("group_by=identity"))
            expect(results).to_have_attribute("data-params", re.compile("until=.*%2B00%3A00"))
            expect(results).to_have_attribute("data-params", re.compile("since=.*%2B00%3A00"))
            shown = cards.locator(".camera-id").all_inner_texts()
            identities = cards.locator(".chip.identity").all_inner_texts()
            assert shown and set(shown) == {"cam-2"}
            assert len(set(identities)) == len(identities) == len(shown)
            assert not errors, errors
            assert not outside, outside
        finally:
            browser.close()


def test_page_details_in_headless_chromium(server: Server) -> None:
    """At 1280 x 800: the demo badge whole, times with their zone, Search in view with six
    cameras, the icon served, and a rejected upload clearing the list without a broken image."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is missing: pip install playwright"
    )
    expect = sync_api.expect
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(
                viewport={"width": 1280, "height": 800}, locale="en-US", timezone_id="UTC"
            )
            page = context.new_page()
            page.set_default_timeout(15_000)
            page.goto(server.url + "/")
            page.fill("#api-key", KEY)
            page.click("#key-form button[type=submit]")
            page.wait_for_selector(f"#gallery option[value={SIX}]", state="attached")

            # the demo badge: shown, whole (not cut by an ellipsis), inside the window
            badge = page.locator("#demo-badge")
            expect(badge).to_be_visible()
            assert badge.inner_text().lower() == "demo model"
            assert badge.evaluate("b => b.scrollWidth <= b.clientWidth")
            box = badge.bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 1280

            # the icon the page links is served
            icon = page.evaluate(
                "fetch(document.querySelector('link[rel=icon]').href).then(r => r.status)"
            )
            assert icon == 200

            # six cameras: Search still above the fold
            page.select_option("#gallery", SIX)
            expect(page.locator("#cameras li[data-camera]")).to_have_count(6)
            button = page.locator("#search-button").bounding_box()
            assert button and button["y"] + button["height"] <= 800, button
            toggle = page.locator("label.toggle").bounding_box()  # nothing spills out of the panel
            panel = page.locator("#search-form").bounding_box()
            assert toggle and panel and toggle["x"] + toggle["width"] <= panel["x"] + panel["width"]

            # results show their time with its zone
            page.select_option("#gallery", GALLERY)
            page.set_input_files(
                "#file-input",
                files=[{"name": "q.jpg", "mimeType": "image/jpeg", "buffer": person(2, 7)}],
            )
            cards = page.locator("#results .card")
            expect(cards).to_have_count(K)
            assert re.search(r"\b(UTC|GMT)\b", cards.first.locator("time").inner_text())

            # a rejected upload: the error, no stale list, no broken-image icon
            page.set_input_files(
                "#file-input",
                files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"not a jpeg"}],
            )
            expect(page.locator("#message")).to_be_visible()
            expect(cards).to_have_count(0)
            broken = page.evaluate(
                "[...document.images].filter(i => i.getAttribute('src') && !i.hidden && "
                "i.offsetParent && i.complete && i.naturalWidth === 0).length"
            )
            assert broken == 0
            expect(page.locator("#query-preview")).to_be_hidden()
        finally:
            browser.close()
