"""The search page's tracks, in headless Chromium against a real ``sona serve``: a result's
"Show its track" opens the track's crops over time, and "Search with the whole track" asks
``GET /search?track_id=...`` and lists what the API answers."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from urllib.parse import parse_qs

import httpx
import pytest

from tests.service_support import Server, jpeg, make_checkpoint

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
GALLERY = "street"
TRACKS = 6
PER_TRACK = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("web-tracks")
    srv = Server(make_checkpoint(root / "tiny.pt"), root / "data", SONA_MAX_WAIT_MS="5").start()
    try:
        images = [jpeg(seed=100 + n) for n in range(TRACKS * PER_TRACK)]
        meta = [
            {
                "camera_id": f"cam-{n // PER_TRACK % 2}",
                "timestamp": f"2024-05-01T09:{n // PER_TRACK:02d}:{10 * (n % PER_TRACK):02d}Z",
                "track_id": f"t{n // PER_TRACK}",
                "source": "vtest.avi",
                "frame": 400 + n,
                "box": [10 + n, 20, 48, 120],
            }
            for n in range(len(images))
        ]
        files = [("images", (f"{n}.jpg", d, "image/jpeg")) for n, d in enumerate(images)]
        with srv.client() as client:
            response = client.post(
                "/gallery",
                params={"gallery": GALLERY},
                files=files,
                data={"metadata": json.dumps(meta)},
            )
            assert response.status_code == 201, response.text
        yield srv
    finally:
        srv.stop()


def test_a_results_track_and_a_search_from_the_whole_track(server: Server) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is missing: pip install playwright"
    )
    expect = sync_api.expect
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-US")
            page.set_default_timeout(15_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.url + "/")
            page.wait_for_selector(f"#gallery option[value={GALLERY}]", state="attached")
            page.select_option("#gallery", GALLERY)
            page.set_input_files(
                "#file-input",
                files=[{"name": "q.jpg", "mimeType": "image/jpeg", "buffer": jpeg(seed=104)}],
            )
            cards = page.locator("#results .card")
            expect(cards).to_have_count(10)
            first = page.locator("#results li").first
            track = first.locator(".chip.track").inner_text().removeprefix("track ")
            with httpx.Client(base_url=server.url, timeout=60) as client:
                item = client.get(
                    f"/gallery/{first.locator('.card').get_attribute('data-item-id')}"
                )
                item = item.json()
            seen = f"seen in vtest.avi, frame {item['frame']}, {item['timestamp'][11:19]}"
            expect(first.locator(".provenance")).to_have_text(seen)
            first.locator(".track-open").click()

            panel = page.locator("#track-panel")
            expect(panel).to_be_visible()
            expect(page.locator("#track-title")).to_have_text(f"Track {track}")
            crops = page.locator("#track-crops li")
            expect(crops).to_have_count(PER_TRACK)
            expect(page.locator("#track-crops .provenance")).to_have_count(PER_TRACK)
            expect(page.locator("#track-crops img:not([src^='blob:'])")).to_have_count(0)
            times = page.locator("#track-crops time").evaluate_all(
                "ts => ts.map(t => t.getAttribute('datetime'))"
            )
            assert times == sorted(times)  # oldest first
            assert f"{PER_TRACK} crops" in page.inner_text("#track-meta")

            page.click("#track-search")
            results = page.locator("#results")
            expect(results).to_have_attribute("data-params", re.compile("track_id="))
            params = parse_qs(results.get_attribute("data-params"))
            assert params["track_id"] == [track] and params["gallery"] == [GALLERY]
            expect(cards).to_have_count(10)  # k=10 of the 15 crops of the other tracks
            shown = [cards.nth(i).get_attribute("data-item-id") for i in range(cards.count())]
            with httpx.Client(base_url=server.url, timeout=60) as client:
                answer = client.get(
                    "/search", params={"track_id": track, "gallery": GALLERY, "k": 10}
                ).json()["results"]
            assert shown == [r["item_id"] for r in answer]
            assert track not in page.locator("#results .chip.track").all_inner_texts()
            assert "Whole track (3 crops)" in page.inner_text("#query-caption")
            assert not errors, errors
        finally:
            browser.close()
