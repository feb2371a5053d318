"""model/ owns device choice and opening an encoder: one rule, one read of the checkpoint."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from model.checkpoint import CheckpointError
from model.device import DeviceError, resolve_device
from model.loading import EncoderError, find_export, open_encoder
from tests.service_support import make_checkpoint


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("gpu please")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            resolve_device("cuda:0")


def test_open_encoder_reads_and_hashes_the_checkpoint_once(tmp_path: Path, monkeypatch) -> None:
    path = make_checkpoint(tmp_path / "m.pt")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    reads: list[Path] = []
    real = Path.read_bytes

    def counting(self: Path) -> bytes:
        reads.append(self)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", counting)
    model = open_encoder(path, device="cpu", amp=False)
    assert reads == [path]
    assert model.digest == digest
    assert model.model_id == f"sona-net-r18-sona2-64x32@{digest[:12]}"
    assert model.encoder.dim == 1536 and model.encoder.input_size == (64, 32)
    assert model.encoder.name.startswith("torch fp32")


def test_open_encoder_refuses_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        open_encoder(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        open_encoder(tmp_path / "junk.pt")
    path = make_checkpoint(tmp_path / "m.pt")
    for backend in ("onnx", "openvino"):
        with pytest.raises(EncoderError, match=f"SONA_BACKEND={backend} needs an export"):
            open_encoder(path, backend=backend)
    with pytest.raises(EncoderError, match="not found"):
        open_encoder(path, onnx_model=tmp_path / "none.onnx")


def test_unreadable_checkpoint_is_one_line_read_refused_by_a_mock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint the service's user may not read (root reads anything, hence the mock)."""
    path = make_checkpoint(tmp_path / "m.pt")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(CheckpointError, match=r"cannot read the checkpoint .*: Permission denied$"):
        open_encoder(path)


def test_find_export_prefers_the_int8_file_beside_the_checkpoint_on_a_cpu(tmp_path: Path) -> None:
    checkpoint = tmp_path / "m.pt"
    beside = tmp_path / "m.int8.onnx"
    cpu = torch.device("cpu")
    assert find_export(checkpoint, "auto", None, cpu) is None
    beside.write_bytes(b"")
    assert find_export(checkpoint, "auto", None, cpu) == beside
    assert find_export(checkpoint, "torch", beside, cpu) is None  # torch ignores any export
    assert find_export(checkpoint, "auto", None, torch.device("cuda")) is None
    assert find_export(checkpoint, "onnx", tmp_path / "x.onnx", cpu) == tmp_path / "x.onnx"
    assert find_export(checkpoint, "openvino", None, cpu) == beside
