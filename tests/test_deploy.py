"""Deployment: the compose file and Dockerfiles as written, and `make serve`'s demo.

docker/verify.sh builds and runs the images on a real engine (opt-in: minutes and GBs).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml

from cli.main import build_parser
from tests.docs_support import code_blocks, commands, read, section
from tests.service_support import free_port

ROOT = Path(__file__).resolve().parents[1]


def dockerfile(name: str) -> dict[str, list[str]]:
    """Instructions of a Dockerfile by keyword, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "docker" / name).read_text())
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.setdefault(keyword.upper(), []).append(rest.strip())
    return found


def dockerignore_rules() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def dockerignore_admits() -> list[str]:
    """What the allowlist .dockerignore lets into the build context."""
    return [rule[1:] for rule in dockerignore_rules() if rule.startswith("!")]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu"])
def test_dockerfiles(name: str) -> None:
    d = dockerfile(name)
    assert d["USER"] == ["sona"], "the service runs as a non-root user"
    assert any("/readyz" in h for h in d["HEALTHCHECK"])
    assert d["EXPOSE"] == ["8000"]
    assert any("/data" in v for v in d["VOLUME"])
    # the base image and torch's source are build arguments (defaults for users)
    assert d["FROM"] == ["${BASE_IMAGE}"]
    assert "BASE_IMAGE=python:3.11-slim" in d["ARG"]
    assert any('--index-url "${TORCH_INDEX_URL}"' in run for run in d["RUN"])
    # dependencies before code: pyproject is copied and installed before the packages, which
    # come in one layer (some storage drivers copy each layer whole)
    copies = d["COPY"]
    assert copies == ["pyproject.toml ./", ". ./"]
    deps = next(run for run in d["RUN"] if "--editable" in run)
    assert '".${EXTRAS:+[${EXTRAS}]}"' in deps
    # the start command is `sona serve`, with options the real parser accepts
    command = json.loads(d["CMD"][0])
    assert command[:2] == ["sona", "serve"]
    args = build_parser().parse_args(command[1:])
    assert args.host == "0.0.0.0" and args.port == 8000


def test_build_context_holds_every_package_and_nothing_else() -> None:
    """`COPY . ./` takes what .dockerignore admits: each installed package, no data or venv."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    assert dockerignore_rules()[0] == "*", "an allowlist: everything else stays out"
    assert sorted(dockerignore_admits()) == sorted([*packages, "pyproject.toml"])
    for name in ("Dockerfile", "Dockerfile.cpu"):
        deps = next(run for run in dockerfile(name)["RUN"] if "--editable" in run)
        for package in packages:  # the editable install finds each of them
            assert f"{package}/__init__.py" in deps, (name, package)
        assert "touch README.md" in deps, "pyproject.toml names it; the real one is not needed"


def test_image_defaults_for_users() -> None:
    cuda, cpu = dockerfile("Dockerfile"), dockerfile("Dockerfile.cpu")
    assert 'EXTRAS=""' in cuda["ARG"] and 'EXTRAS=""' in cpu["ARG"]
    # torch from pip's own default index unless a build argument names another
    assert 'TORCH_INDEX_URL=""' in cuda["ARG"] and 'TORCH_INDEX_URL=""' in cpu["ARG"]


def test_compose_file() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    gpu, cpu = compose["services"]["sona"], compose["services"]["sona-cpu"]
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile"
    assert cpu["build"]["dockerfile"] == "docker/Dockerfile.cpu"
    assert cpu["profiles"] == ["cpu"] and "profiles" not in gpu
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    for service in (gpu, cpu):
        assert "gallery-data:/data" in service["volumes"]
        assert "${SONA_MODELS_DIR:-./models}:/models:ro" in service["volumes"]
        # the volume is all it can write; signals reach it while it loads the model
        assert service["read_only"] is True and service["tmpfs"] == ["/tmp"]
        assert service["init"] is True
        assert service["restart"] == "unless-stopped"
        assert service["environment"]["SONA_DATA_DIR"] == "/data"
        assert service["environment"]["SONA_CHECKPOINT"].startswith("/models/")
        assert service["ports"][0].endswith(":8000")
    assert "gallery-data" in compose["volumes"]


def test_verify_script_parses() -> None:
    """docker/verify.sh runs by hand only (minutes, GBs): here, that it parses and can run."""
    script = ROOT / "docker" / "verify.sh"
    assert os.access(script, os.X_OK)
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_readme_commands_are_the_ones_ci_and_make_run() -> None:
    """README.md's set-up block is ``make serve`` (run by the test below) and ``make test``
    (what CI runs, nothing else)."""
    block = code_blocks(section(read("README.md"), "## Set up"), "sh")[0]
    assert [c.split("#")[0].strip() for c in commands(block)] == ["make serve", "make test"]
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^serve:.*\n\t\$\(BIN\)/sona serve ", makefile, re.M)


@pytest.mark.slow
def test_make_serve_builds_a_demo_that_answers_a_search(tmp_path: Path) -> None:
    """The README's serve command on a tiny budget: demo data, training, indexing, search."""
    port = free_port()
    env = {
        **os.environ,
        "SONA_CHECKPOINT": "",
        "SONA_DATA_DIR": str(tmp_path / "data"),
        "SONA_DEMO_EPOCHS": "1",
        "SONA_DEMO_IDENTITIES": "16",
        "SONA_DEVICE": "cpu",
    }
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        ["make", "-s", "serve", f"PORT={port}", f"VENV={Path(sys.executable).parents[1]}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 400
        indexed = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                counts = httpx.get(f"{url}/gallery", timeout=2).json()
                indexed = next((g for g in counts["galleries"] if g["gallery"] == "default"), None)
                if indexed and "SONA DEMO ready" in (tmp_path / "serve.log").read_text():
                    break
            except (httpx.TransportError, ValueError, KeyError):
                pass
            time.sleep(1)
        output = (tmp_path / "serve.log").read_text()
        assert indexed and indexed["count"] > 0, output[-3000:]
        ready = httpx.get(f"{url}/readyz").json()
        assert ready["demo"] is True
        curl = re.search(r"curl -F image=@(\S+) '([^']+)'", output)
        assert curl, output[-2000:]
        query = Path(curl.group(1)).read_bytes()
        response = httpx.post(curl.group(2), files={"image": ("q.jpg", query, "image/jpeg")})
        assert response.status_code == 200 and response.json()["results"], response.text
        assert "DEMO" in output
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        log.close()

    # the second start reuses the demo (no new training) and the indexed gallery
    second = subprocess.Popen(
        [str(Path(sys.executable).parent / "sona"), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        assert httpx.get(f"{url}/gallery").json()["total"] == indexed["count"]
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        out = second.communicate(timeout=60)[0].decode()
    assert "training the tiny preset" not in out


def test_compose_milvus_profile() -> None:
    """Milvus standalone with etcd and MinIO, two replicas sharing it behind nginx."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    milvus_side = ["etcd", "minio", "milvus-standalone", "sona-a", "sona-b", "proxy"]
    for name in milvus_side:
        assert services[name]["profiles"] == ["milvus"], name
    assert "profiles" not in services["sona"] and services["sona-cpu"]["profiles"] == ["cpu"]
    for name in ["etcd", "minio", "milvus-standalone", "proxy"]:
        image = services[name]["image"]
        assert ":" in image and not image.endswith(":latest"), image  # pinned
        assert services[name]["healthcheck"]["test"], name
    standalone = services["milvus-standalone"]
    assert standalone["command"] == ["milvus", "run", "standalone"]
    assert standalone["environment"]["ETCD_ENDPOINTS"] == "etcd:2379"
    assert standalone["environment"]["MINIO_ADDRESS"] == "minio:9000"
    assert set(standalone["depends_on"]) == {"etcd", "minio"}

    replicas = [services["sona-a"], services["sona-b"]]
    for replica in replicas:
        env = replica["environment"]
        assert env["SONA_STORE"] == "milvus"
        assert env["SONA_MILVUS_URI"] == "http://milvus-standalone:19530"
        assert env["SONA_CROPS_DIR"].startswith("/data/")
        assert "sona-shared:/data" in replica["volumes"]
        assert "${SONA_MODELS_DIR:-./models}:/models:ro" in replica["volumes"]
        assert replica["depends_on"]["milvus-standalone"]["condition"] == "service_healthy"
        assert replica["build"]["args"]["EXTRAS"] == "milvus"
        assert "ports" not in replica  # reached through the proxy only
    assert replicas[0]["environment"] == replicas[1]["environment"]
    assert "sona-shared" in compose["volumes"]
    for volume in ("milvus-etcd", "milvus-minio", "milvus-data"):
        assert volume in compose["volumes"]

    proxy = services["proxy"]
    assert "./docker/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    assert proxy["ports"][0].endswith(":80")
    conf = (ROOT / "docker" / "nginx.conf").read_text()
    upstream = re.search(r"upstream sona \{(.*?)\}", conf, re.S).group(1)
    active = [line.split("#")[0].strip() for line in upstream.splitlines()]
    servers = [line.split()[1] for line in active if line.startswith("server ")]
    assert servers == ["sona-a:8000", "sona-b:8000"]
    assert not any(line.startswith(("ip_hash", "hash", "least_conn")) for line in active)
    assert "proxy_pass http://sona;" in conf
    sizes = re.search(r"client_max_body_size (\d+)m;", conf)
    assert sizes and int(sizes.group(1)) >= 64 * 10  # a full batch of uploads gets through
