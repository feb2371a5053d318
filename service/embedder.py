"""Dynamic micro-batching: concurrent requests share forward passes.

Requests put preprocessed crops on a bounded queue and await a future. One worker task takes
the first waiting crop, gathers more until ``max_batch_size`` or ``max_wait_ms`` after the
first, drops crops whose request was cancelled (the client went away) before the network sees
them, and runs the batch on a single worker thread so the event loop keeps serving. At most
``queue_size`` crops are pending (queued, or gathered into a batch not yet answered); past
that a request is refused at once (``Overloaded``: 503 with Retry-After) instead of the queue
growing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from model.encoders import Encoder

from .metrics import Metrics

__all__ = ["Embedder", "Overloaded"]


class Overloaded(RuntimeError):
    """The embedding queue is full; try again shortly."""


class Embedder:
    """Embeds uint8 ``[3, H, W]`` crops already resized to the network's input size."""

    def __init__(
        self,
        encoder: Encoder,
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        queue_size: int = 512,
        metrics: Metrics | None = None,
    ) -> None:
        self.encoder = encoder
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self.metrics = metrics or Metrics()
        self._queue: asyncio.Queue[tuple[torch.Tensor, asyncio.Future]] | None = None
        self.pending = 0  # crops accepted and not yet answered (or dropped)
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sona-embed")

    @property
    def input_size(self) -> tuple[int, int]:
        return self.encoder.input_size

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def has_room(self, count: int) -> bool:
        """Whether ``count`` more crops can be accepted now (checked before decoding them)."""
        return self.pending + count <= self.queue_size

    def _done(self, _: asyncio.Future) -> None:
        self.pending -= 1

    def embed_now(self, images: torch.Tensor) -> np.ndarray:
        """Synchronously embed ``uint8 [B, 3, H, W]``: the forward pass a batch runs."""
        return self.encoder(images)

    def warm_up(self) -> None:
        """Run the shapes serving will see so the first request pays no start-up cost."""
        self.encoder.warm_up(tuple(sorted({1, min(self.max_batch_size, 8)})))

    async def start(self) -> None:
        self._queue = asyncio.Queue()  # unbounded: ``pending`` bounds what is accepted
        self._worker = asyncio.create_task(self._run(), name="sona-embed-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=True)

    async def embed(self, image: torch.Tensor) -> np.ndarray:
        """The flip-averaged, L2-normalised embedding of one crop, batched with its peers."""
        if self._queue is None:
            raise RuntimeError("embedder not started")
        if not self.has_room(1):
            self.metrics.rejected.inc()
            raise Overloaded("the embedding queue is full")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((image, future))  # never full: pending bounds it
        self.pending += 1
        future.add_done_callback(self._done)
        self.metrics.queue_depth.set(self._queue.qsize())
        return await future

    async def embed_many(self, images: list[torch.Tensor]) -> np.ndarray:
        """Several crops of one request, ``[N, D]``; all queued at once so they batch together."""
        if not self.has_room(len(images)):
            self.metrics.rejected.inc(len(images))
            raise Overloaded("the embedding queue is full")
        return np.stack(await asyncio.gather(*(self.embed(i) for i in images)))

    async def _gather(self) -> list[tuple[torch.Tensor, asyncio.Future]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.max_wait
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                while len(batch) < self.max_batch_size and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            self.metrics.queue_depth.set(self._queue.qsize())
            live = [(image, future) for image, future in batch if not future.done()]
            if dropped := len(batch) - len(live):
                self.metrics.dropped.inc(dropped)
            if not live:
                continue
            images = torch.stack([image for image, _ in live])
            start = time.perf_counter()
            try:
                vectors = await loop.run_in_executor(self._executor, self.embed_now, images)
            except Exception as exc:  # surface to every waiting request, keep serving
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.metrics.embed_seconds.observe(time.perf_counter() - start)
            self.metrics.batch_size.observe(len(live))
            for (_, future), vector in zip(live, vectors, strict=True):
                if not future.done():
                    future.set_result(vector)
