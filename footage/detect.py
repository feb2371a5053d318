"""Finding people in a frame, three ways behind one interface (``Detector.detect``):

- ``HogDetector``: OpenCV's HOG + linear SVM pedestrian detector (Dalal and Triggs), built into
  OpenCV 4.x, so it needs no weights; its overlapping windows are merged by non-maximum
  suppression. Fast on a CPU, and misses people under about 100 pixels unless upscaled.
- ``TorchvisionDetector``: a torchvision COCO detector by name (SSDlite, Faster R-CNN), its
  weights from a local file or torchvision's weights API. Better recall, slower on a CPU.
- ``motchallenge.FileDetector``: detections a site already has, in MOTChallenge ``det.txt``
  format.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import FootageError

__all__ = [
    "ONNX_FASTER_ON_CPU",
    "TORCHVISION_MODELS",
    "Detection",
    "Detector",
    "HogDetector",
    "TorchvisionDetector",
    "nms",
]

#: torchvision detection models that take COCO weights (label 1 is a person).
TORCHVISION_MODELS = (
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "ssdlite320_mobilenet_v3_large",
)
_COCO_PERSON = 1
#: Run in ONNX Runtime on a CPU by default: measured faster there than PyTorch (the others
#: were slower, or not measured; see the footage section of bench/RESULTS.md).
ONNX_FASTER_ON_CPU = frozenset({"fasterrcnn_mobilenet_v3_large_320_fpn"})
#: Frames per forward pass on a CPU where a batch was measured faster than one frame (Faster
#: R-CNN was not); on a GPU, 8.
_BATCH_ON_CPU = {"ssdlite320_mobilenet_v3_large": 4}
_SWEEP = (144.0, 1.2)  # HOG's sweep: the shortest box it looks for, its scale step
_EXHAUSTIVE_STEP = 1.05  # the exhaustive search's scale step, which the aligned sweep repeats
_SWEEP_LEVELS = ("coarse", "aligned")


@dataclass(frozen=True)
class Detection:
    """A person's box in frame pixels (left, top, width, height) and the detector's score."""

    x: float
    y: float
    w: float
    h: float
    score: float

    @property
    def corners(self) -> tuple[float, float, float, float]:
        return self.x, self.y, self.x + self.w, self.y + self.h


class Detector(abc.ABC):
    """People in one frame. ``high_score``: the score above which a detection may start a
    track (the tracker's first association round); ``None``: every detection may."""

    name: str
    high_score: float | None = None

    @abc.abstractmethod
    def detect(self, index: int, image: np.ndarray) -> list[Detection]:
        """People in frame ``index`` (0-based) of the clip, whose BGR pixels are ``image``."""

    def detect_in(
        self, index: int, image: np.ndarray, regions: list[tuple[int, int, int, int]]
    ) -> list[Detection]:
        """People in the ``regions`` (x, y, w, h) of the frame that moved. A detector that
        sees the whole frame at once (a CNN) looks at all of it when anything moved."""
        return self.detect(index, image) if regions else []

    batch = 1  # frames per call of ``detect_many`` worth gathering

    def detect_many(self, frames: list[tuple[int, np.ndarray]]) -> list[list[Detection]]:
        """``detect`` of several frames (index, image); a detector that gains from batches
        (a CNN on a GPU) takes them in one pass."""
        return [self.detect(index, image) for index, image in frames]

    def sweep(self, index: int, image: np.ndarray, found: list[Detection]) -> list[Detection]:
        """``found`` (from ``detect_in``) and what a cheap look at the whole frame for tall
        boxes adds. Only a detector whose moving regions can miss those (HOG) looks."""
        return found

    def check(self, frames: int, width: int, height: int, name: str) -> None:  # noqa: B027
        """Refuse a clip these detections cannot belong to (only ``FileDetector`` can tell)."""

    def describe(self) -> str:
        """What makes its output what it is (resumed runs must detect the same way)."""
        return self.name


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def nms(detections: list[Detection], iou: float) -> list[Detection]:
    """Non-maximum suppression (OpenCV's): the best box of each overlapping cluster."""
    if not detections:
        return []
    boxes = [[d.x, d.y, d.w, d.h] for d in detections]
    low = min(float(d.score) for d in detections)
    scores = [float(d.score) - low + 1.0 for d in detections]  # OpenCV keeps scores > 0 only
    keep = cv2.dnn.NMSBoxes(boxes, scores, score_threshold=0.0, nms_threshold=iou)
    return [detections[int(i)] for i in np.asarray(keep).reshape(-1)]


class HogDetector(Detector):
    """``upscale`` enlarges the frame first: HOG's window is 64x128, so people shorter than
    about 100 pixels are found only in an upscaled frame (1.5: from about 70 pixels)."""

    name = "hog"
    high_score = 0.5

    def __init__(
        self,
        upscale: float = 1.5,
        min_score: float = 0.0,
        nms_iou: float = 0.4,
        stride: int = 8,
        pyramid: float = 1.05,
        sweep_height: float = _SWEEP[0],
        sweep_step: float = _SWEEP[1],
        sweep_levels: str = _SWEEP_LEVELS[0],
    ) -> None:
        if upscale <= 0:
            raise FootageError("the HOG upscale factor must be > 0")
        if pyramid <= 1:
            raise FootageError("the HOG pyramid step must be > 1")
        if sweep_levels not in _SWEEP_LEVELS:
            raise FootageError(f"unknown HOG sweep {sweep_levels!r}: {' or '.join(_SWEEP_LEVELS)}")
        self.sweep_levels = sweep_levels
        self.pyramid = pyramid
        self.upscale = upscale
        self.min_score = min_score
        self.nms_iou = nms_iou
        self.stride = stride
        self.sweep_height = sweep_height
        self.sweep_step = sweep_step
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def describe(self) -> str:
        sweep = (self.sweep_height, self.sweep_step)
        return (
            f"hog x{self.upscale:g} score>{self.min_score:g} nms{self.nms_iou:g} "
            f"step{self.pyramid:g}"
            + ("" if sweep == _SWEEP else f" sweep{sweep[0]:g}/{sweep[1]:g}")
            + ("" if self.sweep_levels == _SWEEP_LEVELS[0] else f" sweep-{self.sweep_levels}")
        )

    def detect(self, index: int, image: np.ndarray) -> list[Detection]:
        return nms(self._windows(image, 0, 0), self.nms_iou)

    def detect_in(
        self, index: int, image: np.ndarray, regions: list[tuple[int, int, int, int]]
    ) -> list[Detection]:
        """Only the moving regions are searched: a fraction of the frame's pixels, so a
        fraction of the time (HOG's cost grows with the pixels searched)."""
        found = []
        for x, y, w, h in regions:
            found.extend(self._windows(image[y : y + h, x : x + w], x, y))
        return nms(found, self.nms_iou)

    def sweep(self, index: int, image: np.ndarray, found: list[Detection]) -> list[Detection]:
        """The whole frame reduced so that HOG's window is a box ``sweep_height`` pixels tall,
        and the coarse scales above it: the tall boxes (groups walking together, people near
        the camera) that the moving regions' windows are too small for. Reduced, the frame
        costs a fraction of the fine search; without OpenCV's grouping (which needs the
        fine scale steps' many overlapping windows) the windows go to non-maximum
        suppression with the rest. ``sweep_levels="aligned"``: the exhaustive search's own
        tall scales instead (``aligned_sweep``)."""
        if self.sweep_levels == "aligned":
            return nms(found + self.aligned_sweep(image), self.nms_iou)
        s = 128 * 0.9 / self.sweep_height  # the box is 0.9 of the window's height
        small = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        tall = self._windows(small, 0, 0, upscale=1.0, step=self.sweep_step, group=0)
        tall = [Detection(d.x / s, d.y / s, d.w / s, d.h / s, d.score) for d in tall]
        return nms(found + tall, self.nms_iou)

    def aligned_sweep(self, image: np.ndarray) -> list[Detection]:
        """The tall boxes the exhaustive search (the whole frame at ``upscale``, scale step
        1.05, OpenCV's grouping) finds, for about a quarter of its cost: its pyramid from
        the level below the first whose box is ``sweep_height`` tall, the frame resized once
        to that level and searched with the same step, stride and grouping, so that the
        levels, and with them the boxes, are the exhaustive search's (one level below, as
        OpenCV groups the windows of neighbouring levels)."""
        first = math.log(self.upscale * self.sweep_height / (128 * 0.9), _EXHAUSTIVE_STEP)
        level = max(0, math.ceil(first) - 1)
        s = self.upscale / _EXHAUSTIVE_STEP**level
        small = cv2.resize(image, None, fx=s, fy=s)
        tall = self._windows(small, 0, 0, upscale=1.0, step=_EXHAUSTIVE_STEP, group=2)
        return nms(
            [Detection(d.x / s, d.y / s, d.w / s, d.h / s, d.score) for d in tall], self.nms_iou
        )

    def _windows(
        self,
        image: np.ndarray,
        left: int,
        top: int,
        *,
        upscale: float | None = None,
        step: float | None = None,
        group: int = 2,
    ) -> list[Detection]:
        s = self.upscale if upscale is None else upscale
        if min(image.shape[0] * s, image.shape[1] * s * 2) < 128:
            return []  # smaller than HOG's window
        scaled = image if s == 1 else cv2.resize(image, None, fx=s, fy=s)
        rects, weights = self._hog.detectMultiScale(
            scaled,
            hitThreshold=self.min_score,
            winStride=(self.stride, self.stride),
            padding=(8, 8),
            scale=step or self.pyramid,
            groupThreshold=group,
        )
        found = []
        for (x, y, w, h), score in zip(rects, np.asarray(weights).reshape(-1), strict=True):
            # the 64x128 window holds a margin around the person: keep some of it, as crops
            # in re-ID data do, but not all (Market-1501's crops are tighter)
            dx, dy = 0.1 * w, 0.05 * h
            found.append(
                Detection(
                    left + (x + dx) / s,
                    top + (y + dy) / s,
                    (w - 2 * dx) / s,
                    (h - 2 * dy) / s,
                    float(score),
                )
            )
        return found


class TorchvisionDetector(Detector):
    """A torchvision COCO detector by name (``model``); person boxes scoring ``min_score`` or
    more. Its weights come from ``weights`` (a state-dict file, for offline machines), or
    else through torchvision's own weights API: downloaded once into the torch cache, read
    from there afterwards. An offline machine without the file is told what to fetch and
    where to put it."""

    name = "torchvision"

    def __init__(
        self,
        weights: Path | None,
        model: str = TORCHVISION_MODELS[0],
        *,
        min_score: float = 0.3,
        high_score: float = 0.6,
        device: str = "auto",
        min_size: int | None = None,
        runtime: str = "auto",
        batch: int | None = None,
    ) -> None:
        import torch
        import torchvision

        from model.device import resolve_device

        if model not in TORCHVISION_MODELS:
            raise FootageError(
                f"unknown torchvision detector {model!r}: {', '.join(TORCHVISION_MODELS)}"
            )
        if runtime not in ("auto", "torch", "onnx"):
            raise FootageError(f"unknown detector runtime {runtime!r}: auto, torch or onnx")
        if runtime == "onnx" and not model.startswith("fasterrcnn"):
            # SSD's exported graph keeps the example's frame size: its boxes come out wrong
            raise FootageError(f"{model} does not run in ONNX Runtime here: use the torch runtime")
        if weights is None:
            state, origin = _cached_weights(model)
        else:
            if not weights.is_file():
                raise FootageError(f"{weights}: no such weights file")
            try:
                state = torch.load(weights, map_location="cpu", weights_only=True)
            except Exception as exc:  # any file torch cannot read is the user's to fix
                raise FootageError(
                    f"{weights}: not a PyTorch weights file ({_line(exc)})"
                ) from None
            origin = f"{weights.stat().st_size}:{weights.stat().st_mtime_ns}"
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]  # a training checkpoint of torchvision's reference scripts
        extra: dict = {"min_size": min_size} if min_size else {}
        # the score threshold's name differs between the two families
        extra["score_thresh" if model.startswith("ssd") else "box_score_thresh"] = min_score
        net = torchvision.models.get_model(
            model, weights=None, weights_backbone=None, num_classes=91, **extra
        )
        try:
            net.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise FootageError(f"{weights}: not {model} COCO weights ({_line(exc)})") from None
        self.device = resolve_device(device)
        self.net = net.eval().to(self.device)
        self.model = model
        self.min_score = min_score
        self.high_score = high_score
        self._digest = origin
        if runtime == "auto":
            cpu = self.device.type == "cpu"
            runtime = "onnx" if cpu and model in ONNX_FASTER_ON_CPU else "torch"
        self.runtime = runtime
        self._session = _onnx_session(self.net) if runtime == "onnx" else None
        if self._session is not None:  # the exported graph takes one frame at a time
            self.batch = 1
        elif self.device.type == "cpu":
            self.batch = batch or _BATCH_ON_CPU.get(model, 1)
        else:
            self.batch = batch or 8

    def describe(self) -> str:
        runtime = " onnx" if self._session is not None else ""  # its boxes differ a little
        return f"torchvision {self.model} {self._digest} score>{self.min_score:g}{runtime}"

    def detect(self, index: int, image: np.ndarray) -> list[Detection]:
        return self.detect_many([(index, image)])[0]

    def detect_many(self, frames: list[tuple[int, np.ndarray]]) -> list[list[Detection]]:
        import torch

        rgb = [np.ascontiguousarray(image[:, :, ::-1]) for _, image in frames]
        if self._session is not None:  # the exported graph takes one frame at a time
            outs = []
            for pixels in rgb:
                chw = np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32) / 255
                boxes, labels, scores = self._session.run(None, {"image": chw})
                outs.append((boxes, labels, scores))
        else:
            tensors = [
                torch.from_numpy(p).permute(2, 0, 1).to(self.device, torch.float32) / 255
                for p in rgb
            ]
            with torch.inference_mode():
                found = self.net(tensors)
            outs = [
                (o["boxes"].cpu().numpy(), o["labels"].cpu().numpy(), o["scores"].cpu().numpy())
                for o in found
            ]
        return [self._people(*out) for out in outs]

    def _people(self, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> list[Detection]:
        return [
            Detection(float(x1), float(y1), float(x2 - x1), float(y2 - y1), float(s))
            for (x1, y1, x2, y2), label, s in zip(boxes, labels, scores, strict=True)
            if label == _COCO_PERSON and s >= self.min_score and x2 > x1 and y2 > y1
        ]


def _onnx_session(net):
    """``net`` exported to ONNX in memory (a second or two) and opened in ONNX Runtime, with
    the frame's height and width left free."""
    import io
    import warnings

    import onnxruntime as ort
    import torch

    buffer = io.BytesIO()
    example = [torch.zeros(3, 320, 320)]
    with warnings.catch_warnings():  # the tracer's notes on torchvision's size arithmetic
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.cpu(),
            (example,),
            buffer,
            opset_version=17,
            dynamo=False,
            input_names=["image"],
            output_names=["boxes", "labels", "scores"],
            dynamic_axes={"image": {1: "height", 2: "width"}, "boxes": {0: "n"}},
        )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


def _cached_weights(model: str) -> tuple[dict, str]:
    """COCO weights of ``model`` through torchvision's weights API (the torch cache, filled
    from the network the first time), or a one-line error saying what to fetch, and where."""
    import os

    import torch
    from torchvision.models import get_model_weights

    weights = get_model_weights(model).DEFAULT
    file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    try:
        return weights.get_state_dict(progress=False, check_hash=True), weights.url
    except (OSError, RuntimeError, ValueError) as exc:  # offline, refused, cut short
        raise FootageError(
            f"no {model} weights here and they cannot be downloaded ({_line(exc)}): fetch "
            f"{weights.url} and put it at {file}, or give --weights FILE"
        ) from None
