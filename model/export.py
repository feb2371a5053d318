"""ONNX export of the embedding network, and its int8 quantisation with calibration crops.

The exported graph is the whole embedding: ImageNet-normalised ``float32 [B, 3, H, W]`` in,
flip-averaged L2-normalised ``float32 [B, D]`` out, with a dynamic batch axis. What a consumer
needs to feed it (input size, mean and std) and which checkpoint it came from travel in the
model's metadata, so a service can refuse an ONNX file that does not belong to its checkpoint.

Static int8 (QDQ, per-channel weights, activation ranges from calibration crops) is what makes
convolutions fast on a CPU; dynamic quantisation only touches MatMul/Gemm and leaves the
convolutions, where the time goes, in fp32.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .preprocess import IMAGENET_MEAN, IMAGENET_STD
from .sona_net import SONANet

__all__ = [
    "EmbeddingGraph",
    "OnnxExportError",
    "export_checkpoint",
    "export_onnx",
    "parse_onnx_meta",
    "quantize_int8",
    "read_onnx_meta",
]

INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
META_KEY = "sona"


class OnnxExportError(RuntimeError):
    """The export or quantisation failed; the message says why."""


class EmbeddingGraph(nn.Module):
    """What ``model.embed`` computes, as one traceable module (no inference_mode, no mode flip)."""

    def __init__(self, net: SONANet) -> None:
        super().__init__()
        self.net = net.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n = images.shape[0]
        features = self.net(torch.cat([images, images.flip(-1)]))
        return F.normalize((features[:n] + features[n:]) / 2, dim=1)  # chunk() pins the batch


def _metadata(net: SONANet, extra: dict[str, Any]) -> dict[str, str]:
    config = net.config
    meta = {
        "input_size": list(config.input_size),
        "embedding_dim": net.embedding_dim,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "depth": config.depth,
        "sona_stages": list(config.sona_stages),
        "precision": "fp32",
        **extra,
    }
    return {META_KEY: json.dumps(meta, sort_keys=True)}


def _set_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def export_onnx(net: SONANet, path: str | Path, *, opset: int = 18, **meta: Any) -> Path:
    """Write the embedding graph of ``net`` to ``path`` (fp32, dynamic batch); returns path.

    ``meta`` (for example the checkpoint's digest) is stored beside the input description.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = EmbeddingGraph(net).cpu().float()
    h, w = net.config.input_size
    example = torch.zeros(2, 3, h, w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                graph,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=4096)}},
                external_data=False,
                verbose=False,
            )
        except Exception as exc:  # the exporter raises many types; one clear error out
            raise OnnxExportError(f"ONNX export failed: {exc}") from exc
    program.save(str(path), external_data=False)
    _set_metadata(path, _metadata(net, meta))
    return path


def read_onnx_meta(path: str | Path) -> dict[str, Any]:
    """The ``sona`` metadata of an exported model; raises ``OnnxExportError`` if it has none."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise OnnxExportError(f"{path}: not an ONNX model ({exc})") from exc
    return parse_onnx_meta({p.key: p.value for p in model.metadata_props}, path)


def parse_onnx_meta(props: dict[str, str], path: str | Path) -> dict[str, Any]:
    """The ``sona`` entry of a model's metadata properties, however they were read."""
    if META_KEY not in props:
        raise OnnxExportError(f"{path}: not a SONA-Net export (no '{META_KEY}' metadata)")
    return json.loads(props[META_KEY])


class _Calibration:
    """``onnxruntime.quantization.CalibrationDataReader`` feeding normalised crops one by one.

    Calibration runs a copy of the model with a reduction on every intermediate tensor, whose
    memory grows with the batch (bench/RESULTS.md has the figures), so crops go through singly.
    MinMax keeps only each crop's minima and maxima; the histogram methods (percentile,
    entropy) keep every activation of every crop.
    """

    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self._batches = iter(batches)
        self._pending: list[np.ndarray] = []

    def get_next(self) -> dict[str, np.ndarray] | None:
        while not self._pending:
            batch = next(self._batches, None)
            if batch is None:
                return None
            self._pending = list(np.asarray(batch, np.float32))
        return {INPUT_NAME: np.ascontiguousarray(self._pending.pop(0)[None])}

    def rewind(self) -> None:  # part of the reader protocol; one pass is all we need
        pass


def quantize_int8(
    fp32_path: str | Path,
    path: str | Path,
    calibration: Iterable[np.ndarray],
    *,
    method: str = "minmax",
    quant_format: str = "qdq",
    per_channel: bool = True,
    weights: str = "s8",
    reduce_range: bool = False,
) -> Path:
    """Static int8 (QDQ, per-channel) model from an fp32 export and calibration batches.

    ``calibration`` yields normalised ``float32 [B, 3, H, W]`` batches of real crops: the
    activation ranges come from them, so they should look like what will be served.
    ``method`` is ``minmax`` (the default: its memory stays flat whatever the number of crops),
    ``percentile`` (99.999th, robust to outliers) or ``entropy``; the last two keep histograms
    whose memory grows with the crops. The other options are the variants ``bench/embed.py``
    compares: ``quant_format`` ``qdq`` (quantise/dequantise pairs that runtimes fuse; OpenVINO
    reads only these as int8) or ``qoperator`` (ONNX Runtime's integer operators);
    per-tensor weights; ``weights`` ``u8`` (u8 x u8 products, which AVX2 CPUs without VNNI
    compute without the 16-bit saturation of u8 x s8); ``reduce_range`` (7-bit weights, the
    other cure for that saturation).
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if method not in methods:
        raise ValueError(f"method must be one of {sorted(methods)}, got {method!r}")
    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    types = {"s8": QuantType.QInt8, "u8": QuantType.QUInt8}
    if quant_format not in formats or weights not in types:
        raise ValueError(f"quant_format: one of {sorted(formats)}; weights: one of {sorted(types)}")
    meta = read_onnx_meta(fp32_path)
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="sona-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # calibration prints progress
                quantize_static(
                    str(prepared),
                    str(path),
                    _Calibration(calibration),
                    quant_format=formats[quant_format],
                    per_channel=per_channel,
                    reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8,
                    weight_type=types[weights],
                    op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                    calibrate_method=methods[method],
                    extra_options={"CalibTensorRangeSymmetric": False},
                )
        except Exception as exc:
            raise OnnxExportError(f"int8 quantisation failed: {exc}") from exc
    _set_metadata(path, {META_KEY: json.dumps({**meta, "precision": "int8"}, sort_keys=True)})
    return path


def export_checkpoint(
    checkpoint: str | Path,
    path: str | Path,
    *,
    int8: bool = False,
    calibration: torch.Tensor | None = None,
    method: str = "minmax",
) -> Path:
    """Export a checkpoint file; ``int8`` quantises with ``calibration`` crops (``uint8``)."""
    from .checkpoint import file_sha256, load_checkpoint
    from .preprocess import normalize

    digest = file_sha256(checkpoint)
    net, _ = load_checkpoint(checkpoint)
    meta = {"checkpoint": Path(checkpoint).name, "checkpoint_sha256": digest}
    if not int8:
        return export_onnx(net, path, **meta)
    if calibration is None or len(calibration) == 0:
        raise ValueError("int8 needs calibration crops, like the ones that will be served")
    with tempfile.TemporaryDirectory(prefix="sona-export-") as tmp:
        fp32 = export_onnx(net, Path(tmp) / "fp32.onnx", **meta)
        batches = (normalize(b).numpy() for b in calibration.split(16))
        return quantize_int8(fp32, path, batches, method=method)
