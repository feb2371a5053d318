"""Encoders: resized uint8 crops in, flip-averaged L2-normalised embeddings out.

One interface over the ways the network can run, so the service, ``sona export`` and
``bench/embed.py`` run exactly the same code: PyTorch (fp32 or bf16 autocast, channels_last,
optionally ``torch.compile``), and an fp32 or static int8 export (``sona export``) in ONNX
Runtime or in OpenVINO. Which one is fastest at equal rankings depends on the CPU's
instruction sets; it is a measurement (``bench/embed.py``, and the service's start-up probe),
not a guess.
"""

from __future__ import annotations

import importlib.util
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .export import INPUT_NAME, parse_onnx_meta, read_onnx_meta
from .preprocess import normalize
from .sona_net import SONANet, embed

__all__ = ["Encoder", "OnnxEncoder", "OpenVinoEncoder", "TorchEncoder", "agreement"]


class Encoder(ABC):
    """``encoder(uint8 [B, 3, H, W]) -> float32 [B, D]``; crops already at ``input_size``."""

    name: str
    runtime: str  # torch, onnxruntime or openvino
    input_size: tuple[int, int]
    dim: int

    @abstractmethod
    def __call__(self, images: torch.Tensor) -> np.ndarray: ...

    @classmethod
    def available(cls) -> bool:
        """Whether this encoder's runtime is installed."""
        return importlib.util.find_spec(cls.runtime) is not None

    def warm_up(self, batch_sizes: tuple[int, ...] = (1, 8)) -> None:
        """Run the shapes serving will see, so the first request pays no start-up cost."""
        h, w = self.input_size
        for size in batch_sizes:
            self(torch.zeros(size, 3, h, w, dtype=torch.uint8))


class TorchEncoder(Encoder):
    """The network in PyTorch on ``device``.

    ``bf16``: autocast to bfloat16 (CUDA, or a CPU with bf16 instructions); ``channels_last``:
    NHWC memory layout, faster for convolutions on both; ``compile``: ``torch.compile``.
    """

    runtime = "torch"

    def __init__(
        self,
        net: SONANet,
        device: torch.device | str = "cpu",
        *,
        bf16: bool = False,
        channels_last: bool = True,
        compile: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.input_size = tuple(net.config.input_size)
        self.dim = net.embedding_dim
        self.channels_last = channels_last
        self.bf16 = bf16
        net = net.to(self.device).eval()
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        self._forward = torch.compile(net, dynamic=False) if compile else net
        parts = ["bf16" if bf16 else "fp32"] + ["channels_last"] * channels_last
        self.name = f"torch {' '.join(parts)}{' compiled' if compile else ''} ({self.device.type})"

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        batch = normalize(images.to(self.device, non_blocking=True))
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            vectors = embed(self._forward, batch)
        return vectors.cpu().numpy()


class OnnxEncoder(Encoder):
    """An exported model (``sona export``) in ONNX Runtime; its metadata gives size and dim.

    ``spinning``: let idle worker threads busy-wait for the next operator (ONNX Runtime's
    default); off here, as the service decodes and searches on the same cores.
    """

    runtime = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int | None = None,
        device: str = "cpu",
        spinning: bool = False,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", str(int(spinning)))
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        # the session has parsed the file already: its metadata, not a second parse with onnx
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = parse_onnx_meta(props, self.path)
        self.input_size = tuple(self.meta["input_size"])
        self.dim = int(self.meta["embedding_dim"])
        self.name = f"onnxruntime {self.meta.get('precision', 'fp32')} ({providers[0]})"

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        batch = normalize(images).numpy()
        return self.session.run(None, {INPUT_NAME: batch})[0]


class OpenVinoEncoder(Encoder):
    """The same export in OpenVINO's CPU runtime, which runs int8 QDQ graphs as int8.

    ``bf16``: let OpenVINO compute in bfloat16 where it does not run int8 (its own default on
    a CPU with bf16 instructions); off, it computes in fp32 as ONNX Runtime does, which for an
    int8 export's remaining layers was the faster on AMX (bench/RESULTS.md).
    """

    runtime = "openvino"

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int | None = None,
        bf16: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """``meta``: the export's metadata, when the caller has read it already."""
        import openvino as ov

        self.path = Path(path)
        self.meta = meta if meta is not None else read_onnx_meta(self.path)
        config = {
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
            "ENABLE_CPU_PINNING": False,  # the service's other threads share these cores
        }
        self.compiled = ov.Core().compile_model(str(self.path), "CPU", config)
        self._requests = threading.local()  # an infer request serves one thread at a time
        self.input_size = tuple(self.meta["input_size"])
        self.dim = int(self.meta["embedding_dim"])
        precision = self.meta.get("precision", "fp32")
        self.name = f"openvino {precision}{' bf16' if bf16 else ''} (CPU)"

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self.compiled.create_infer_request()
        result = request.infer({0: normalize(images).numpy()}, share_inputs=True)
        return np.array(result[0], copy=True)  # the request reuses its output buffer


def agreement(
    reference: np.ndarray, candidate: np.ndarray, k: int = 10, tie_tol: float = 1e-5
) -> dict[str, float]:
    """How far ``candidate`` embeddings stray from ``reference`` ones of the same crops.

    Vector error (max absolute difference, min cosine) and what a user sees: each crop searched
    against the others, the mean overlap of its top ``k``, the share with an identical (same
    items, same order) top ``k``, and the share whose top ``k`` is the same ranking up to ties:
    position by position, the item the candidate puts there scores, by the reference, within
    ``tie_tol`` of the reference's item there. Near-ties swap with a CPU's float rounding, so
    that last figure, not the identical share, is the one to hold an export to.
    """
    ref_scores = reference @ reference.T
    np.fill_diagonal(ref_scores, -np.inf)

    def top(x: np.ndarray) -> np.ndarray:
        scores = x @ x.T
        np.fill_diagonal(scores, -np.inf)
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]

    a, b = top(reference), top(candidate)
    overlap = [len(set(x) & set(y)) / k for x, y in zip(a, b, strict=True)]
    rows = np.arange(len(a))[:, None]
    tied = np.abs(ref_scores[rows, a] - ref_scores[rows, b]).max(axis=1) <= tie_tol
    return {
        "max_abs_diff": float(np.abs(reference - candidate).max()),
        "min_cosine": float(np.min(np.sum(reference * candidate, axis=1))),
        "topk_overlap": float(np.mean(overlap)),
        "identical_topk": float(np.mean(np.all(a == b, axis=1))),
        "same_ranking": float(np.mean(tied)),
    }
