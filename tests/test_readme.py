"""The README's "Try it" commands and the docs pages' commands that need a served model, run
as written against a served demo.

``sona serve`` without a checkpoint builds the demo (a small one here: 16 synthetic
identities, one epoch, so that it takes about a minute and not the default's minutes) and
serves it; every shell command of the README's "Try it" section then runs literally in a
folder holding the files it names (``crop.jpg``, ``a.jpg``, ``crops/``, ``query.jpg``,
``.venv`` linking to the running environment), with only the host and port replaced (in the
URLs, and as ``SONA_URL`` for ``sona gallery add``, whose default is where ``make serve``
listens), and each answer is checked against what the README shows or says. The Python
example of docs/api.md, the ``sona viz`` examples of docs/quickstart.md, the footage commands
of docs/footage.md and the export of docs/cpu.md run too (the convention that ties each
page's shell blocks to a test is in tests/test_docs.py), and what the pages say of the demo's
start: its port opens at once, and ``/readyz`` says what is being prepared and how far along
it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.docs_support import PAGE_URL, code_blocks, commands, read, section
from tests.footage_support import needs_vtest
from tests.service_support import Server, free_port, jpeg, serve_fails

pytestmark = pytest.mark.slow

README_URL = PAGE_URL
#: The crop the README's sample answer shows first: camera 3, frame 451 at 25 fps after 08:00.
TWIN = "0002_c3s1_000451_01.jpg"


def sample_keys(sample: str) -> tuple[set[str], set[str]]:
    """Top-level and per-result keys of the README's sample answer (not strict JSON)."""
    inner = sample[sample.index("[") : sample.rindex("]")]
    result_keys = set(re.findall(r'"(\w+)":', inner))
    all_keys = set(re.findall(r'"(\w+)":', sample))
    return all_keys - result_keys | {"results"}, result_keys


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the files the README's commands name, and ``.venv`` as they expect."""
    root = tmp_path_factory.mktemp("readme")
    (root / ".venv").symlink_to(Path(sys.executable).parent.parent, target_is_directory=True)
    for name, seed in (("crop.jpg", 1), ("a.jpg", 2), ("b.jpg", 3)):
        (root / name).write_bytes(jpeg(seed))
    crops = root / "crops"
    crops.mkdir()
    for name, seed in (
        (TWIN, 10),
        ("0002_c1s1_000100_01.jpg", 11),
        ("0003_c1s1_000200_01.jpg", 12),
        ("0003_c2s1_000300_01.jpg", 13),
        ("0004_c3s1_000400_01.jpg", 14),
        ("0005_c2s1_000500_01.jpg", 15),
    ):
        (crops / name).write_bytes(jpeg(seed))
    (root / "query.jpg").write_bytes((crops / TWIN).read_bytes())
    return root


class Demo:
    """A served demo, and what ``/readyz`` and ``/`` answered while it was being built."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.url = server.url
        self.starting: list[dict] = []  # /readyz answers before it was ready
        self.page_while_starting: httpx.Response | None = None

    def client(self) -> httpx.Client:
        return self.server.client()


@pytest.fixture(scope="module")
def demo(workdir: Path):
    """``sona serve`` with no checkpoint: the demo, built and served from ``workdir/data``,
    watched from the moment its port opens."""
    server = Server(
        Path("unused"),
        workdir / "data",
        log_dir=workdir,
        SONA_CHECKPOINT="",  # none: the demo
        SONA_DEMO_IDENTITIES="16",
        SONA_DEMO_EPOCHS="1",
    )
    served = Demo(server)
    outcome: list[BaseException | None] = []

    def start() -> None:
        try:
            server.start(timeout=600)
            outcome.append(None)
        except BaseException as exc:  # re-raised below
            outcome.append(exc)

    thread = threading.Thread(target=start)
    thread.start()
    while thread.is_alive():
        try:
            response = httpx.get(f"{server.url}/readyz", timeout=5)
        except httpx.TransportError:
            time.sleep(0.2)
            continue
        if response.status_code == 503:
            served.starting.append(response.json())
            if served.page_while_starting is None:
                served.page_while_starting = httpx.get(f"{server.url}/", timeout=5)
        time.sleep(0.3)
    thread.join()
    if outcome != [None]:
        raise outcome[0] or RuntimeError("the demo did not start")
    yield served
    server.stop()


def run(command: str, workdir: Path, server: Server | Demo) -> str:
    result = subprocess.run(
        ["bash", "-c", command.replace(README_URL, server.url)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={
            **os.environ,
            "SONA_URL": server.url,  # the default --url of sona gallery add and footage add
            "PATH": f"{workdir / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",  # bare sona
            "XDG_CACHE_HOME": str(workdir / ".cache"),  # footage runs' state: this test's own
        },
    )
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    return result.stdout


def test_try_it_commands_answer_as_the_readme_says(demo: Demo, workdir: Path) -> None:
    try_it = section(read("README.md"), "## Try it")
    shell = commands(code_blocks(try_it, "sh")[0])
    assert len(shell) == 4, shell
    embed, ingest, add_folder, search = shell
    with demo.client() as client:
        assert client.get("/readyz").json()["demo"] is True

    body = json.loads(run(embed, workdir, demo))
    assert body["dim"] == len(body["embedding"]) == 1536 and body["query_id"]
    assert body["expires_in_s"] == 15 * 60  # "usable by GET /search for 15 minutes"

    body = json.loads(run(ingest, workdir, demo))
    assert body["count"] == 2 and [i["camera_id"] for i in body["items"]] == ["lobby-2"] * 2
    assert {i["gallery"] for i in body["items"]} == {"site1"}
    when = datetime.fromisoformat("2024-05-01T12:00:00+02:00")
    assert all(datetime.fromisoformat(i["timestamp"]) == when for i in body["items"])

    out = run(add_folder, workdir, demo)
    assert re.search(r"added 6 of 6 crops to gallery 'site1'", out), out

    answer = json.loads(run(search, workdir, demo))
    sample = code_blocks(try_it, "json")[0]
    top_keys, result_keys = sample_keys(sample)
    assert set(answer) == top_keys, (set(answer), top_keys)
    assert answer["gallery"] == "site1" and answer["k"] == 5
    results = answer["results"]
    assert 1 <= len(results) <= 5
    assert all(set(r) == result_keys for r in results)
    # what the README's sample shows first: the query's twin, camera c3 at 08:00:18.04 +02:00
    assert results[0]["camera_id"] == "c3"
    assert results[0]["timestamp"] == "2024-05-01T08:00:18.040000+02:00"
    assert f'"timestamp": "{results[0]["timestamp"]}"' in sample
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert results[0]["identity"] is None and results[0]["track_id"] is None
    since = datetime.fromisoformat("2024-05-01T06:00:00Z")
    for result in results:  # "from two cameras, since 08:00 at +02:00"
        assert result["camera_id"] in {"c1", "c3"}
        assert datetime.fromisoformat(result["timestamp"]) >= since
    assert [r["rank"] for r in results] == list(range(1, len(results) + 1))


def test_an_empty_search_says_why(demo: Demo, workdir: Path) -> None:
    with demo.client() as client:
        added = client.get("/gallery").json()
        held = next(g["count"] for g in added["galleries"] if g["gallery"] == "site1")
        per_camera = {
            c["camera_id"]: c["count"]
            for g in added["galleries"]
            if g["gallery"] == "site1"
            for c in g["cameras"]
        }
        answer = client.post(
            "/search",
            params={"gallery": "site1", "cameras": "c1,c3", "since": "2030-01-01T00:00:00Z"},
            files={"image": ("q.jpg", (workdir / "query.jpg").read_bytes(), "image/jpeg")},
        ).json()
    assert answer["results"] == []
    why = answer["empty_reason"]
    assert why["gallery_items"] == held
    others = sum(n for camera, n in per_camera.items() if camera not in {"c1", "c3"})
    assert why["removed_by"] == {"cameras": others, "since_until": held - others}
    assert f"holds {held} items" in why["detail"] and "since_until" in why["detail"]
    with demo.client() as client:  # a search that finds something has no such field
        found = client.post(
            "/search",
            params={"gallery": "site1"},
            files={"image": ("q.jpg", (workdir / "query.jpg").read_bytes(), "image/jpeg")},
        ).json()
    assert found["results"] and "empty_reason" not in found


def test_the_python_example_runs(demo: Demo, workdir: Path) -> None:
    block = code_blocks(section(read("docs/api.md"), "## From Python: `SonaClient`"), "python")[0]
    script = workdir / "example.py"
    script.write_text(block.replace(README_URL, demo.url))
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    printed = result.stdout.splitlines()
    assert 1 <= len(printed) <= 5 and printed[0].startswith("1 ")


def test_the_viz_examples_run_on_the_demo(demo: Demo, workdir: Path) -> None:
    block = code_blocks(section(read("docs/quickstart.md"), "## Pictures of a model"), "sh")[0]
    viz = commands(block)
    assert len(viz) == 3 and all("data/demo" in c for c in viz)
    for command in viz:
        run(command.split("#")[0], workdir, demo)
    for name in ("attention.png", "ranks.png", "curves.png"):
        assert (workdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@needs_vtest
def test_the_footage_commands_index_vtest_and_search_by_track(demo: Demo, workdir: Path) -> None:
    """docs/footage.md's commands against the demo: the first 20 s of vtest.avi indexed with
    HOG, then a track read and searched by. ``sona footage add`` gets ``--url`` (its default is
    where ``make serve`` listens), and the track id in the page's two curl commands is replaced
    by the first one this run printed (the id holds a key of the run's settings, among them the
    service's URL, which differs here)."""
    block = code_blocks(section(read("docs/footage.md"), "# From camera footage"), "sh")[1]
    add, track, search = commands(block)
    assert "--url" not in add
    out = run(f"{add} --url {demo.url}", workdir, demo)
    printed = re.search(r"(\d+) tracks in (\d+) frames .*: (\d+) indexed with (\d+) crops", out)
    assert printed, out
    tracks, frames, indexed, crops = map(int, printed.groups())
    assert frames == 200 and 0 < indexed <= tracks and crops >= indexed  # 20 s at 10 fps
    first = re.search(r"track ids? (street-1-20240501T080000-\w{6}-\d{4})", out)
    assert first, out
    shown = re.search(r"street-1-20240501T080000-\w{6}-0001", track)
    assert shown and shown.group() in search

    body = json.loads(run(track.replace(shown.group(), first.group(1)), workdir, demo))
    assert body["camera_id"] == "street-1" and body["track_id"] == first.group(1)
    times = [datetime.fromisoformat(c["timestamp"]) for c in body["items"]]
    assert times == sorted(times) and times[0] >= datetime.fromisoformat(
        "2024-05-01T08:00:00+02:00"
    )
    answer = json.loads(run(search.replace(shown.group(), first.group(1)), workdir, demo))
    found = [r["track_id"] for r in answer["results"]]
    assert found and len(found) == len(set(found))  # one result per track


def test_the_int8_export_is_served_as_the_cpu_page_says(demo: Demo, workdir: Path) -> None:
    """docs/cpu.md's two commands on the demo's checkpoint, copied to ``models/sona.pt``, with
    the folder's six crops to calibrate on; ``sona serve`` gets ``--port`` (a free one) and is
    stopped once ready."""
    export, serve = commands(code_blocks(read("docs/cpu.md"), "sh")[0])
    folder = workdir / "cpu"
    (folder / "models").mkdir(parents=True)
    shutil.copy(workdir / "data" / "demo" / "demo.pt", folder / "models" / "sona.pt")
    shutil.copytree(workdir / "crops", folder / "crops")
    (folder / ".venv").symlink_to(workdir / ".venv")
    run(export.split("#")[0], folder, demo)
    assert (folder / "models" / "sona.int8.onnx").is_file()  # "writes models/sona.int8.onnx"

    port = free_port()
    process = subprocess.Popen(
        ["bash", "-c", f"{serve.split('#')[0].strip()} --port {port}"],
        cwd=folder,
        env={**os.environ, "PATH": f"{workdir / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        ready = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
                if answer.status_code == 200:
                    ready = answer.json()
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
    finally:
        with contextlib.suppress(ProcessLookupError):  # bash and sona serve, one group
            os.killpg(process.pid, signal.SIGTERM)
        log = process.communicate(timeout=60)[0].decode()
    assert ready is not None, log[-3000:]
    choice = ready["encoder_choice"]  # "/readyz says which runtime and why"
    assert choice["runtime"] in {"onnxruntime", "openvino"} and choice["reason"], choice
    assert ready["encoder"].startswith(f"{choice['runtime']} int8"), ready


def test_the_demo_listens_at_once_and_readyz_tells_its_progress(demo: Demo) -> None:
    page = demo.page_while_starting
    assert page is not None and page.status_code == 200  # the page, while preparing
    answers = demo.starting
    stages = [a["progress"]["stage"] for a in answers]
    assert "training the demo model" in stages, stages
    training = [
        a["progress"]["fraction"]
        for a in answers
        if a["progress"]["stage"] == "training the demo model"
    ]
    assert training == sorted(training) and all(0 <= f <= 1 for f in training)
    for answer in answers:
        assert answer["status"] == 503 and answer["type"].endswith(":starting")
        assert answer["detail"].startswith("not ready: ")
        assert answer["progress"]["stage"] in answer["detail"]
        assert answer["progress"]["elapsed_s"] >= 0


def test_a_second_demo_on_a_held_data_directory_says_so_in_one_line(demo: Demo) -> None:
    """The demo's store opens before its port: a held directory is one line, not a log."""
    reason = serve_fails(SONA_CHECKPOINT="", SONA_DATA_DIR=demo.server.env["SONA_DATA_DIR"])
    assert "another store" in reason


def test_a_demo_that_cannot_be_built_stops_the_server_with_the_reason(tmp_path: Path) -> None:
    """Two identities cannot fill the tiny preset's batches: the port was open, the server
    stops by itself, and ``sona serve`` ends with the reason and exit status 2."""
    server = Server(Path("unused"), tmp_path / "data", SONA_CHECKPOINT="", SONA_DEMO_IDENTITIES="2")
    with pytest.raises(RuntimeError, match="server exited"):
        server.start(timeout=300)
    assert server.process is not None and server.process.returncode == 2
    last = server.log.read_text().strip().splitlines()[-1]
    assert last.startswith("sona serve: error: could not prepare the service: ")
    assert "identities" in last
