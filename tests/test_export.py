"""ONNX export and the encoders: PyTorch, ONNX Runtime and OpenVINO give the same rankings.

Real exports (torch.onnx), real ONNX Runtime and OpenVINO sessions, real ``sona export`` and
``sona serve`` processes on the tiny configuration.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from model import load_checkpoint
from model.cpu import cpu_has_bf16, cpu_info
from model.encoders import OnnxEncoder, OpenVinoEncoder, TorchEncoder, agreement
from model.export import (
    OnnxExportError,
    export_checkpoint,
    export_onnx,
    read_onnx_meta,
)
from model.preprocess import image_files, load_crops, normalize, resize
from model.sona_net import embed
from service.imaging import decode_image
from tests.service_support import SONA, Server, jpeg, make_checkpoint, serve_fails
from training.synthetic import make_dataset


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", seed=3)


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """Synthetic people: a calibration split (train) and a ranking split (test)."""
    folder = tmp_path_factory.mktemp("synthetic") / "d"
    make_dataset(folder, identities=30, cameras=3, seed=5)
    return {
        split: load_crops(image_files(folder / split), (64, 32))
        for split in ("bounding_box_train", "bounding_box_test")
    }


@pytest.fixture(scope="module")
def fp32_export(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_checkpoint(checkpoint, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="module")
def int8_export(checkpoint: Path, crops, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx8") / "tiny.int8.onnx"
    return export_checkpoint(checkpoint, path, int8=True, calibration=crops["bounding_box_train"])


def embed_all(encoder, images: torch.Tensor) -> np.ndarray:
    return np.concatenate([encoder(b) for b in images.split(17)])  # odd batches: dynamic axis


def test_fp32_export_equals_pytorch_and_keeps_every_ranking(checkpoint, fp32_export, crops):
    net, _ = load_checkpoint(checkpoint)
    test = crops["bounding_box_test"]
    reference = embed(net, normalize(test)).numpy()
    exported = embed_all(OnnxEncoder(fp32_export), test)
    figures = agreement(reference, exported)
    assert figures["max_abs_diff"] < 1e-5
    assert figures["min_cosine"] > 1 - 1e-6
    # the same rankings, up to near-ties (which swap with a CPU's float rounding)
    assert figures["same_ranking"] == 1.0
    assert figures["topk_overlap"] > 0.98
    # and the batch axis is dynamic: one image alone gives the same vector
    alone = OnnxEncoder(fp32_export)(test[:1])
    np.testing.assert_allclose(alone[0], reference[0], atol=1e-5)


def test_export_metadata_ties_it_to_its_checkpoint(checkpoint, fp32_export):
    from model.checkpoint import file_sha256

    meta = read_onnx_meta(fp32_export)
    assert meta["checkpoint_sha256"] == file_sha256(checkpoint)
    assert meta["input_size"] == [64, 32] and meta["embedding_dim"] == 1536
    assert meta["precision"] == "fp32"
    graph = onnx.load(str(fp32_export)).graph
    assert [i.name for i in graph.input] == ["images"]
    assert [o.name for o in graph.output] == ["embeddings"]


def test_int8_export_keeps_rankings_close(checkpoint, int8_export, fp32_export, crops):
    net, _ = load_checkpoint(checkpoint)
    test = crops["bounding_box_test"]
    reference = embed_all(TorchEncoder(net, channels_last=False), test)
    figures = agreement(reference, embed_all(OnnxEncoder(int8_export), test))
    assert read_onnx_meta(int8_export)["precision"] == "int8"
    assert figures["min_cosine"] > 0.98
    assert figures["topk_overlap"] > 0.8
    assert int8_export.stat().st_size < 0.5 * fp32_export.stat().st_size  # int8 weights


def test_openvino_runs_the_export_as_onnx_runtime_does(fp32_export, int8_export, crops):
    """One export, two runtimes: fp32 to float rounding, int8 to int8 rounding."""
    test = crops["bounding_box_test"]
    fp32 = agreement(embed_all(OnnxEncoder(fp32_export), test), embed_all(ov(fp32_export), test))
    assert fp32["max_abs_diff"] < 1e-4 and fp32["same_ranking"] > 0.95
    int8 = agreement(embed_all(OnnxEncoder(int8_export), test), embed_all(ov(int8_export), test))
    assert int8["min_cosine"] > 0.99 and int8["topk_overlap"] > 0.8  # as ORT int8 vs fp32
    assert ov(int8_export).name == "openvino int8 (CPU)"


def ov(path: Path) -> OpenVinoEncoder:
    return OpenVinoEncoder(path)


def test_int8_needs_calibration(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="calibration"):
        export_checkpoint(checkpoint, tmp_path / "m.onnx", int8=True)


def test_torch_variants_agree_with_fp32(checkpoint, crops):
    net, _ = load_checkpoint(checkpoint)
    test = crops["bounding_box_test"]
    reference = embed_all(TorchEncoder(net, channels_last=False), test)
    channels_last = embed_all(TorchEncoder(net, channels_last=True), test)
    assert agreement(reference, channels_last)["max_abs_diff"] < 1e-4
    if cpu_has_bf16():
        bf16 = agreement(reference, embed_all(TorchEncoder(net, bf16=True), test))
        assert bf16["min_cosine"] > 0.99 and bf16["topk_overlap"] > 0.9


def test_not_an_export_is_refused(tmp_path, fp32_export):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all")
    with pytest.raises(OnnxExportError, match="not an ONNX model"):
        read_onnx_meta(garbage)
    foreign = onnx.load(str(fp32_export))
    del foreign.metadata_props[:]
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    with pytest.raises(OnnxExportError, match="not a SONA-Net export"):
        read_onnx_meta(tmp_path / "foreign.onnx")


def test_export_onnx_of_a_network_in_training_mode_exports_eval(checkpoint, tmp_path):
    net, _ = load_checkpoint(checkpoint)
    net.train()
    path = export_onnx(net, tmp_path / "m.onnx")
    x = torch.rand(2, 3, 64, 32)
    out = OnnxEncoder(path).session.run(None, {"images": x.numpy()})[0]
    np.testing.assert_allclose(out, embed(net, x).numpy(), atol=1e-5)


def run_sona(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SONA, *args], capture_output=True, text=True, timeout=300, check=False)


def test_sona_export_command(checkpoint, tmp_path):
    out = tmp_path / "m.onnx"
    result = run_sona("export", str(checkpoint), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "same top-10 up to near-ties 100.0%" in result.stdout
    assert "SONA_ONNX_MODEL=" in result.stdout
    assert read_onnx_meta(out)["precision"] == "fp32"
    refused = run_sona("export", str(checkpoint), "--int8", "-o", str(tmp_path / "q.onnx"))
    assert refused.returncode == 2 and "--calibrate" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "q.onnx").exists()


def test_service_serves_the_onnx_export(checkpoint, int8_export, tmp_path):
    server = Server(
        checkpoint, tmp_path / "data", SONA_ONNX_MODEL=str(int8_export), SONA_BACKEND="onnx"
    ).start()
    try:
        with server.client() as c:
            ready = c.get("/readyz").json()
            assert ready["encoder"].startswith("onnxruntime int8")
            assert ready["encoder_choice"]["chosen_by"] == "setting"
            body = c.post("/embed", files={"image": ("a.jpg", jpeg(4), "image/jpeg")}).json()
            crop = resize(decode_image(jpeg(4)).pixels, (64, 32))[None]
            expected = OnnxEncoder(int8_export)(crop)[0]
            np.testing.assert_allclose(body["embedding"], expected, atol=1e-5)
    finally:
        server.stop()


def test_service_refuses_an_export_of_another_checkpoint(fp32_export, tmp_path):
    other = make_checkpoint(tmp_path / "other.pt", seed=4)
    reason = serve_fails(
        SONA_CHECKPOINT=str(other),
        SONA_ONNX_MODEL=str(fp32_export),
        SONA_DATA_DIR=str(tmp_path / "d"),
    )
    assert "another checkpoint" in reason


def test_bad_onnx_settings_are_refused(checkpoint, tmp_path):
    base = {"SONA_CHECKPOINT": str(checkpoint), "SONA_DATA_DIR": str(tmp_path / "d")}
    assert "SONA_ONNX_MODEL" in serve_fails(**base, SONA_BACKEND="onnx")
    assert "not found" in serve_fails(**base, SONA_ONNX_MODEL=str(tmp_path / "missing.onnx"))
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    assert "not an ONNX model" in serve_fails(**base, SONA_ONNX_MODEL=str(tmp_path / "bad.onnx"))


def test_service_default_encoder_is_bf16_where_the_cpu_has_it(checkpoint, tmp_path):
    server = Server(checkpoint, tmp_path / "data", SONA_AMP="true").start()
    try:
        with server.client() as c:
            encoder = c.get("/readyz").json()["encoder"]
            assert encoder.startswith("torch bf16" if cpu_has_bf16() else "torch fp32")
            served = c.post("/embed", files={"image": ("a.jpg", jpeg(6), "image/jpeg")}).json()
    finally:
        server.stop()
    net, _ = load_checkpoint(checkpoint)
    crop = resize(decode_image(jpeg(6)).pixels, (64, 32))[None]
    exact = TorchEncoder(net, channels_last=False)(crop)[0]
    assert float(np.dot(served["embedding"], exact)) > 0.99


def test_int8_export_beside_the_checkpoint_is_served_by_default(checkpoint, int8_export, tmp_path):
    """What ``sona export --int8`` writes (model.int8.onnx beside model.pt) is picked up."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(checkpoint, models / "model.pt")
    shutil.copy(int8_export, models / "model.int8.onnx")
    for chosen_by in ("probe", "cache"):  # measured at the first start, remembered after
        server = Server(models / "model.pt", tmp_path / "data", log_level="info").start()
        try:
            with server.client() as c:
                ready = c.get("/readyz").json()
        finally:
            server.stop()
        choice = ready["encoder_choice"]
        assert choice["chosen_by"] == chosen_by, choice
        assert set(choice["probe"]) == {"onnxruntime", "openvino"}
        assert choice["runtime"] == max(choice["probe"], key=choice["probe"].get)
        assert ready["encoder"].startswith(f"{choice['runtime']} int8")
        assert cpu_info().isa_class in choice["reason"] and choice["cpu"]
        assert f"encoder: {choice['runtime']}, chosen by {chosen_by}" in server.log.read_text()
    server = Server(models / "model.pt", tmp_path / "data", SONA_BACKEND="openvino").start()
    try:
        with server.client() as c:
            # int8 with the rest in fp32, even where bf16 is native: faster on AMX
            assert c.get("/readyz").json()["encoder"] == "openvino int8 (CPU)"
    finally:
        server.stop()
    server = Server(models / "model.pt", tmp_path / "data", SONA_BACKEND="torch").start()
    try:
        with server.client() as c:
            assert c.get("/readyz").json()["encoder"].startswith("torch")
    finally:
        server.stop()
    make_checkpoint(models / "model.pt", seed=9)  # retrained: the export beside it is stale
    reason = serve_fails(
        SONA_CHECKPOINT=str(models / "model.pt"), SONA_DATA_DIR=str(tmp_path / "data")
    )
    assert "another checkpoint" in reason and "SONA_BACKEND=torch" in reason


def test_agreement_counts_near_ties_as_the_same_ranking():
    """Two items whose scores differ by 1e-7 may swap on another CPU: still the same ranking;
    a real change of order is not."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[2] = x[1]  # an exact tie for every query: either order of items 1 and 2 is right
    nudge = rng.standard_normal(16).astype(np.float32) * 1e-6
    swapped = x.copy()
    swapped[1] -= nudge  # the tie broken one way for some queries, the other way for others
    swapped[2] += nudge
    figures = agreement(x, swapped)
    assert figures["identical_topk"] < 1.0  # the order did change somewhere
    assert figures["same_ranking"] == 1.0
    noisy = x + rng.normal(0, 0.2, x.shape).astype(np.float32)  # a real change
    assert agreement(x, noisy)["same_ranking"] < 0.5
