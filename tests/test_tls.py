"""HTTPS from ``sona serve`` itself (uvicorn's TLS): a certificate made here with the openssl
command line, a client that verifies against it, and one line for a bad pair. The compose
file's example of mounting a certificate parses and names the same settings."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.service_support import Server, make_checkpoint, serve_fails

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def self_signed(folder: Path, name: str = "server") -> tuple[Path, Path]:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


def test_sona_serve_speaks_https_with_the_given_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    server = Server(
        make_checkpoint(tmp_path / "tiny.pt"),
        tmp_path / "data",
        args=("--ssl-certfile", str(cert), "--ssl-keyfile", str(key)),
        verify=trust,
    ).start()
    try:
        assert server.url.startswith("https://")
        with server.client() as c:
            ready = c.get("/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
            assert c.get("/gallery").status_code == 200
        with pytest.raises(httpx.ConnectError):  # a client that does not trust it: refused
            httpx.get(f"{server.url}/healthz", timeout=10)
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the HTTPS port: no answer
            httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=10)
    finally:
        server.stop()


def test_a_bad_certificate_pair_is_one_line(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path, "one")
    _, other_key = self_signed(tmp_path, "two")
    text = serve_fails(SONA_SSL_CERTFILE=str(cert), SONA_SSL_KEYFILE=str(other_key))
    assert "cannot use" in text
    assert "needs both" in serve_fails(SONA_SSL_CERTFILE=str(cert))
    missing = serve_fails(SONA_SSL_CERTFILE=str(cert), SONA_SSL_KEYFILE=str(tmp_path / "no.key"))
    assert "no.key" in missing


def test_the_compose_example_mounts_a_certificate() -> None:
    """The commented HTTPS example in docker-compose.yml, uncommented, is valid compose that
    mounts the certificate read-only and names the files by the variables sona serve reads."""
    lines = (ROOT / "docker-compose.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "# HTTPS example" in line)
    block = []
    for line in lines[start + 1 :]:
        if not line.startswith("#"):
            break
        block.append(line[2:] if line.startswith("# ") else line[1:])
    example = yaml.safe_load("\n".join(block))
    service = example["services"]["sona"]
    assert any(v.endswith(":/certs:ro") for v in service["volumes"])
    env = service["environment"]
    assert env["SONA_SSL_CERTFILE"].startswith("/certs/")
    assert env["SONA_SSL_KEYFILE"].startswith("/certs/")
    assert "https://" in " ".join(service["healthcheck"]["test"])
