"""The torch/torchvision pair must be a matching build: decoding and custom ops must run."""

from __future__ import annotations

import io

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.io import decode_jpeg
from torchvision.ops import nms


def test_torchvision_decodes_jpeg_bytes() -> None:
    pixels = np.zeros((32, 16, 3), dtype=np.uint8)
    pixels[:16] = (200, 30, 30)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    data = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
    image = decode_jpeg(data)
    assert image.shape == (3, 32, 16)
    assert image[0, :16].float().mean() > 150
    assert image[0, 16:].float().mean() < 30


def test_torchvision_custom_ops_run() -> None:
    # A broken pair fails here with "operator torchvision::nms does not exist".
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, iou_threshold=0.5).tolist() == [0, 2]


def test_versions_and_cuda_builds_are_a_pair() -> None:
    # torchvision 0.N is built for torch 2.(N-15); pip does not enforce it for every release.
    tv_minor = int(torchvision.__version__.split(".")[1])
    torch_major, torch_minor = (int(v) for v in torch.__version__.split(".")[:2])
    assert (torch_major, torch_minor) == (2, tv_minor - 15), (
        torch.__version__,
        torchvision.__version__,
    )
    # Both must be built for the same CUDA release (or neither for any).
    tv_cuda = torch.ops.torchvision._cuda_version()
    torch_cuda = torch.version.cuda
    if tv_cuda > 0 or torch_cuda:
        assert torch_cuda is not None, "torchvision has CUDA, torch does not"
        assert f"{tv_cuda // 1000}.{tv_cuda % 1000 // 10}" == torch_cuda, (tv_cuda, torch_cuda)
